"""A flood of reports while questions keep coming (issue 10): acknowledgement, embedding behind, question latency.

    python bench/backlog.py                              # 20,000 reports, default max_in_flight, then 20,512
    python bench/backlog.py --reports 5000 --max-in-flight 512 --no-append

For each ``--max-in-flight`` value: a real nats-server (JetStream, temp store) and ``memory-agent run`` as a
separate process with a fresh data directory and the bundled MiniLM (torch); ``--agents`` agents in this
process publish ``--reports`` reports as fast as ``open_session`` returns (no agent waits for a reply), and
one more agent asks a question every ``--interval`` seconds from the first report until the last one is
embedded (each question its own ``request()``, not waiting for the previous one). Printed and appended to
docs/benchmarks.md:

* acknowledgement: seconds from the first send until every sender got its ``stored`` reply, as reports/s;
* embedding: seconds from the first send until SQLite holds a vector for every row (polled read-only),
  as texts/s and as a ratio to the embedder's ceiling: the same model encoding the same texts in this
  process (half before the daemon starts, half after it stops), at the daemon's ``max_batch`` and at 128;
* questions: latency p50 / p99 / max while reports were being acknowledged, and afterwards while the
  backlog was being embedded (questions travel on the same subject as reports until the mesh has a
  priority lane: during the first phase a question waits behind the reports published before it in
  JetStream, up to ``max_in_flight`` of them at a time in the daemon);
* the daemon's peak RSS (``VmHWM``) and its RSS after a warm-up.

``--max-in-flight 20512`` lets JetStream hand every report to the daemon at once, so a question is not held
back in JetStream: what remains is the daemon's own question latency with the reports queued inside it
(what a priority lane would leave).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from ingest import append_doc, machine, make_reports, proc_cpu, report_texts, stop_daemon

from memory_agent.config import EmbeddingConfig
from memory_agent.embedding.base import load_embedder
from mesh import AsyncAgent, Message, NatsServer

REPO = Path(__file__).resolve().parents[1]
SECTION = "## A flood of reports while questions come (bench/backlog.py)"
INTRO = (
    "N agents publish reports to @memory (a `memory-agent run` process, torch MiniLM) as fast as `open_session` "
    "returns, while one agent asks a question every 0.5 s until every report is embedded. Acknowledgement is "
    "the time until every sender has its `stored` reply; embedding the time until SQLite holds a vector for "
    "every row, against the same model's encode rate on the same texts in the same run. Issue 10 targets: "
    "question p99 <= 500 ms during the drain, acknowledgement >= 1,000 reports/s, embedding >= 0.9 x ceiling, "
    "RSS bounded."
)
QUESTIONS: list[str | dict[str, Any]] = [
    "What rollbacks happened in the last 7 days?",
    {"query": "error budget burned by a bad canary", "limit": 5},
    "How many test failures were reported?",
    {"query": "timeout talking to the database primary", "filters": {"service": "payments"}, "limit": 5},
    "Why did checkout roll back?",
]


@dataclass
class Asked:
    sent: float
    latency: float | None = None
    phase: str = ""
    error: str = ""


@dataclass
class Result:
    max_in_flight: int
    reports: int
    ack_s: float
    embed_s: float
    start_s: float
    baseline_mib: float
    peak_mib: float
    asked: list[Asked] = field(default_factory=list)
    daemon_cpu_s: float = 0.0
    published_s: float = 0.0

    def latencies(self, phase: str) -> list[float]:
        return [a.latency for a in self.asked if a.phase == phase and a.latency is not None]


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    found = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def embedded(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        total, with_vector = conn.execute("SELECT count(*), count(embedding_model) FROM events").fetchone()
    finally:
        conn.close()
    return int(total), int(with_vector)


def start_daemon(url: str, data_dir: Path, args: argparse.Namespace, max_in_flight: int) -> tuple[Any, float]:
    """``memory-agent run`` as a child process; waits for "is up"."""
    import subprocess

    env = dict(os.environ)
    env.update({
        "MEMORY_AGENT_NATS_URL": url, "MEMORY_AGENT_DATA_DIR": str(data_dir), "MEMORY_AGENT_LOG_LEVEL": "INFO",
        "MEMORY_AGENT_MAX_IN_FLIGHT": str(max_in_flight),
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    log_path = data_dir.parent / f"daemon-{max_in_flight}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "memory_agent", "run"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=data_dir.parent)
    deadline = time.monotonic() + 600
    while "is up" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"memory-agent did not start; its log:\n{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    return proc, time.perf_counter() - started


async def flood(url: str, data_dir: Path, reports: list[dict[str, Any]], args: argparse.Namespace,
                max_in_flight: int) -> Result:
    proc, start_s = start_daemon(url, data_dir, args, max_in_flight)
    db = data_dir / "memory.sqlite3"
    replies: dict[str, dict[str, Any]] = {}
    agents = [AsyncAgent(f"flood-{i}", servers=url, max_in_flight=1024) for i in range(args.agents)]

    async def on_reply(msg: Message) -> None:
        if msg.message_type == "session_resolve":
            replies[msg.session] = json.loads(msg.payload)

    asker = AsyncAgent("asker", servers=url)
    try:
        for agent in [*agents, asker]:
            agent.on_message(on_reply)
            await agent.start()
            await agent.register()
        # Warm-up: the model's first batches and the first questions allocate what they need.
        warm = await asyncio.gather(*(agents[0].open_session("memory", json.dumps(r), content_type="application/json")
                                      for r in make_reports(64, seed=7)))
        while not all(o.session in replies for o in warm):
            await asyncio.sleep(0.05)
        for question in QUESTIONS:
            await ask(asker, question)
        while embedded(db)[1] < len(warm):
            await asyncio.sleep(0.1)
        baseline = rss_mib(proc.pid)
        cpu0 = proc_cpu(proc.pid)
        result = Result(max_in_flight, len(reports), 0.0, 0.0, start_s, baseline, 0.0)

        started = time.monotonic()
        acked = asyncio.Event()
        done = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def question(k: int) -> None:
            item = Asked(sent=time.monotonic() - started)
            item.phase = "acknowledging" if not acked.is_set() else "embedding"
            result.asked.append(item)
            t0 = time.monotonic()
            try:
                await ask(asker, QUESTIONS[k % len(QUESTIONS)])
                item.latency = time.monotonic() - t0
            except Exception as exc:  # a question that gets no answer is reported, not hidden
                item.error = f"{type(exc).__name__}: {exc}"[:120]

        async def questioner() -> None:
            k = 0
            while not done.is_set():
                tasks.append(asyncio.create_task(question(k)))
                k += 1
                await asyncio.sleep(args.interval)

        shares = [reports[i :: len(agents)] for i in range(len(agents))]

        async def publish(agent: AsyncAgent, share: list[dict[str, Any]]) -> list[str]:
            slots = asyncio.Semaphore(args.concurrency)

            async def one(report: dict[str, Any]) -> str:
                async with slots:
                    opened = await agent.open_session("memory", json.dumps(report), content_type="application/json")
                    return opened.session

            return list(await asyncio.gather(*(one(r) for r in share)))

        asking = asyncio.create_task(questioner())
        sessions = [s for part in await asyncio.gather(*(publish(a, s) for a, s in zip(agents, shares, strict=True)))
                    for s in part]
        result.published_s = time.monotonic() - started
        peak = baseline
        while not all(s in replies for s in sessions):
            peak = max(peak, rss_mib(proc.pid))
            await asyncio.sleep(0.05)
        result.ack_s = time.monotonic() - started
        acked.set()
        total = len(reports) + len(warm)
        while embedded(db)[1] < total:
            peak = max(peak, rss_mib(proc.pid))
            await asyncio.sleep(0.25)
        result.embed_s = time.monotonic() - started
        done.set()
        await asking
        await asyncio.gather(*tasks)
        result.daemon_cpu_s = proc_cpu(proc.pid) - cpu0
        result.peak_mib = max(peak, rss_mib(proc.pid, "VmHWM"))
        bad = [r for s, r in replies.items() if s in set(sessions) and (r.get("status") != "stored" or r.get("duplicate"))]
        if bad or len({replies[s]["id"] for s in sessions}) != len(sessions):
            raise SystemExit(f"{len(bad)} reports not stored as new, e.g. {bad[:1]}")
        if embedded(db) != (total, total):
            raise SystemExit(f"SQLite holds {embedded(db)}, expected {total} rows all embedded")
        return result
    finally:
        for agent in [*agents, asker]:
            await agent.close()
        stop_daemon(proc)


async def ask(agent: AsyncAgent, question: str | dict[str, Any]) -> str:
    if isinstance(question, str):
        return (await agent.request("memory", question, timeout=300)).payload
    return (await agent.request("memory", json.dumps(question), content_type="application/json", timeout=300)).payload


class Ceiling:
    """The daemon's model loaded here, encoding the same texts in calls of ``batch`` texts (texts/s)."""

    def __init__(self, data_dir: Path, batches: list[int]) -> None:
        self.model = load_embedder(EmbeddingConfig(), data_dir=data_dir)
        self.batches = batches
        self.seconds = dict.fromkeys(batches, 0.0)
        self.texts = dict.fromkeys(batches, 0)

    def run(self, texts: list[str]) -> None:
        for batch in self.batches:
            self.model.encode(texts[:batch])  # warm-up
            started = time.perf_counter()
            for start in range(0, len(texts), batch):
                self.model.encode(texts[start : start + batch])
            self.seconds[batch] += time.perf_counter() - started
            self.texts[batch] += len(texts)

    def rate(self, batch: int) -> float:
        return self.texts[batch] / self.seconds[batch]

    @property
    def best(self) -> float:
        return max(self.rate(b) for b in self.batches)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def table(results: list[Result], ceiling: Ceiling, daemon_batch: int, args: argparse.Namespace) -> list[str]:
    head = ("| max_in_flight | reports | published in s | acknowledged in s (reports/s) | embedded in s (texts/s) "
            "| embedding / ceiling | questions while acknowledging: n, p50 / p99 / max ms "
            "| questions while embedding: n, p50 / p99 / max ms | unanswered | RSS after warm-up / peak MiB "
            "| daemon CPU s |")
    lines = [head, "|" + "---|" * 11]
    for r in results:
        embed_rate = r.reports / r.embed_s
        cells = []
        for phase in ("acknowledging", "embedding"):
            lat = r.latencies(phase)
            cells.append(f"{len(lat)}, {1e3 * pct(lat, 50):.0f} / {1e3 * pct(lat, 99):.0f} / "
                         f"{1e3 * max(lat, default=float('nan')):.0f}")
        lines.append(
            f"| {r.max_in_flight} | {r.reports} | {r.published_s:.1f} | {r.ack_s:.1f} ({r.reports / r.ack_s:.0f}) "
            f"| {r.embed_s:.1f} ({embed_rate:.0f}) | {embed_rate / ceiling.best:.2f} | {cells[0]} | {cells[1]} "
            f"| {sum(1 for a in r.asked if a.latency is None)} | {r.baseline_mib:.0f} / {r.peak_mib:.0f} "
            f"| {r.daemon_cpu_s:.0f} |"
        )
    rates = ", ".join(f"{ceiling.rate(b):.0f} texts/s at {b}" for b in ceiling.batches)
    lines += [
        "",
        f"Embedder ceiling (all-MiniLM-L6-v2, torch, the first {args.ceiling_texts} of the same texts, this "
        f"process, half before and half after the daemons ran): {rates}; the ratio uses the best. The daemon encodes in calls of {daemon_batch} texts "
        "(embedding.max_batch) so that a question's embedding waits for at most one call.  ",
        f"Setup: {args.agents} publishing agents x {args.concurrency} opens in flight; a question every "
        f"{args.interval} s ({len(QUESTIONS)} kinds: list, ranked search, count, filtered search, why); "
        "64 warm-up reports and 5 warm-up questions not timed.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=64, help="open_session calls in flight per agent")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between questions")
    parser.add_argument("--max-in-flight", default="512,20512", help="comma-separated daemon max_in_flight values")
    parser.add_argument("--ceiling-texts", type=int, default=4000,
                        help="report texts the ceiling is measured on (half before, half after the daemons)")
    parser.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    command = " ".join(["python bench/backlog.py", *sys.argv[1:]])
    load_at_start = os.getloadavg()
    reports = make_reports(args.reports, seed=1)
    texts = report_texts(reports)
    daemon_batch = EmbeddingConfig().max_batch
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        work = Path(tmp)
        ceiling = Ceiling(work, sorted({daemon_batch, 128}))
        sample = texts[: args.ceiling_texts]
        ceiling.run(sample[: len(sample) // 2])
        print(f"ceiling (first half): {ceiling.best:.0f} texts/s", flush=True)
        for value in (int(v) for v in args.max_in_flight.split(",") if v.strip()):
            data = work / f"data-{value}"
            data.mkdir()
            with NatsServer(store_dir=work / f"nats-{value}") as server:
                result = asyncio.run(flood(server.url, data, reports, args, value))
            results.append(result)
            print(f"max_in_flight {value}: acknowledged in {result.ack_s:.1f} s, embedded in {result.embed_s:.1f} s",
                  flush=True)
        ceiling.run(sample[len(sample) // 2 :])
    lines = table(results, ceiling, daemon_batch, args)
    load_at_end = os.getloadavg()
    lines.append("Load average at the start {:.1f} / {:.1f} / {:.1f}, at the end {:.1f} / {:.1f} / {:.1f} (1/5/15 min)."
                 .format(*load_at_start, *load_at_end))
    print()
    print("\n".join(lines))
    print(f"\n{machine()}")
    errors = [a.error for r in results for a in r.asked if a.error]
    if errors:
        print(f"{len(errors)} questions failed, e.g. {errors[0]}")
    if not args.no_append:
        append_doc(lines, command, section=SECTION, intro=INTRO)
        print("appended to docs/benchmarks.md")


if __name__ == "__main__":
    main()
