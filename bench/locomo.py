"""Turn-level evidence recall@k of @memory on LoCoMo, through the mesh, beside BM25, dense and RRF baselines.

    python bench/locomo.py [--conversations 10] [--data PATH] [--config FILE] [--set SECTION.KEY=VALUE ...]
                           [--backend torch|onnx|onnx-int8] [--mode search|auto] [--baseline-text raw|speaker]
                           [--no-write]

LoCoMo (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents", ACL 2024;
CC BY-NC 4.0) is read from ``../shared/data/locomo/locomo10.json`` (``--data``), never copied here.
For each conversation a fresh @memory (:class:`memory_agent.daemon.MemoryDaemon`, in this process,
with its own data directory and embedded ``nats-server``) is started; each speaker is an agent on
the mesh (handle = the name, lower case) and reports every turn as an event: ``{"event": "utterance",
"speaker", "text", "dia_id", "session", "occurred_at": <the session's date and time>,
"image_caption"?}`` on trace ``<sample>-s<session>``. The turns of one session are sent in order, each
once the previous one is stored (as they were spoken); sessions go concurrently. Once every turn is embedded (reports are acknowledged on commit and embedded
behind), every question of
categories 1-4 is asked as a structured question ``{"query", "limit": 20, "mode": "search", "as_of":
<the last session's time>}`` (``--mode auto`` leaves intents and name filters to the rules). The model
is loaded once and shared by the daemons.

Recall@k of a question = the share of its evidence turns (``evidence``, e.g. ``D1:3``) among the first
k events returned, averaged over questions (overall and per category; 1 multi-hop, 2 temporal,
3 open-domain, 4 single-hop). Evidence ids are read leniently (``"D8:6; D9:17"``, ``"D30:05"``,
``"D:11:26"``); ids naming no turn are dropped, and questions left without evidence are not scored.
Baselines on the same turns: bm25s alone (PyStemmer English stemmer, English stop words), dense alone
(the same embedder, exact cosine over all turns) and plain RRF (k = 60) of their top 100. Their text
is the raw turn text, or ``"Speaker: text"`` with ``--baseline-text speaker``.

Prints a table, the wall time and turns/s, and (unless ``--no-write``) appends them to
docs/benchmarks.md under "LoCoMo retrieval (bench/locomo.py)". Needs the ``bench`` extra (bm25s).
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from dateutil import parser as dateparser

from memory_agent.config import Config, load_config
from memory_agent.daemon import MemoryDaemon
from memory_agent.embedding.base import load_embedder
from memory_agent.protocols import Embedder
from mesh import AsyncAgent, Manifest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo10.json"
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
HEADING = "## LoCoMo retrieval (bench/locomo.py)"
KS = (1, 5, 10, 20)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
SYSTEMS = ("@memory", "BM25", "dense", "RRF")
DEPTH = 100  # hits per baseline ranking, as @memory's default [retrieval] candidates
_EVIDENCE = re.compile(r"D:?(\d+):0*(\d+)")

INTRO = """# Benchmarks

Figures measured by the scripts under `bench/` (each is plain `python bench/<name>.py`; see its
docstring for what it measures and how). Every run appends its table with the date, the machine
(cores, memory, CPU) and the versions it ran with, so results from different machines and commits stay
comparable. Sections are added by the scripts as they are run.
"""


SECTION_INTRO = """Turn-level evidence recall@k on LoCoMo's 10 conversations (5,882 turns; the 1,536 questions of
categories 1-4 that name an evidence turn). Each conversation goes to a fresh @memory through the mesh:
every turn is a report from the speaker's handle, every question a structured question with `limit` 20,
`"mode": "search"` and `as_of` = the last session's time. R@k = the share of a question's evidence turns
among the first k events returned, averaged over questions. BM25 (bm25s), dense (the same embedder,
exact cosine) and plain RRF (k = 60) of the two are baselines on the same turns. The `[retrieval]` line
of each run gives the settings; the protocol is in the docstring of bench/locomo.py. Newest run last.
"""


# --- LoCoMo -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: str
    dia_id: str
    session: int
    when: datetime
    text: str
    caption: str | None

    def payload(self) -> dict[str, Any]:
        """The report this turn becomes (no "query" key: that would make it a question)."""
        body: dict[str, Any] = {"event": "utterance", "speaker": self.speaker, "text": self.text,
                                "dia_id": self.dia_id, "session": self.session,
                                "occurred_at": self.when.isoformat()}
        if self.caption:
            body["image_caption"] = self.caption
        return body


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]


def handle_of(speaker: str) -> str:
    """'Caroline' -> 'caroline': a valid mesh handle for a speaker's name."""
    handle = re.sub(r"[^a-z0-9_-]", "-", speaker.lower()).strip("-")
    return handle if handle[:1].isalpha() else f"s-{handle}"


def read_turns(conversation: dict[str, Any]) -> list[Turn]:
    """Every turn, session by session, in order; ``when`` is the session's date and time (naive = UTC)."""
    out: list[Turn] = []
    sessions = sorted((int(k.split("_")[1]), k) for k in conversation if re.fullmatch(r"session_\d+", k))
    for number, key in sessions:
        when = dateparser.parse(conversation[f"{key}_date_time"].replace(" on ", " "), dayfirst=True)
        for turn in conversation[key]:
            out.append(Turn(turn["speaker"], turn["dia_id"], number, when, turn["text"], turn.get("blip_caption")))
    return out


def read_questions(sample: dict[str, Any], dia_ids: set[str]) -> tuple[list[Question], int]:
    """Questions of categories 1-4 with at least one evidence turn, and how many were left out."""
    kept: list[Question] = []
    dropped = 0
    for qa in sample["qa"]:
        if qa["category"] not in CATEGORIES:
            continue
        evidence: list[str] = []
        for raw in qa.get("evidence", []):
            for m in _EVIDENCE.finditer(raw):
                dia = f"D{m.group(1)}:{m.group(2)}"
                if dia in dia_ids and dia not in evidence:
                    evidence.append(dia)
        if evidence:
            kept.append(Question(qa["question"], qa["category"], tuple(evidence)))
        else:
            dropped += 1
    return kept, dropped


# --- scoring ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Scores:
    """Recall@k per system, per question: ``rows[system]`` = list of (category, recalls at KS)."""

    rows: dict[str, list[tuple[int, tuple[float, ...]]]] = field(default_factory=dict)

    def add(self, system: str, question: Question, ranked: Sequence[str | None]) -> None:
        gold = set(question.evidence)
        recalls = tuple(len(gold & set(ranked[:k])) / len(gold) for k in KS)
        self.rows.setdefault(system, []).append((question.category, recalls))

    def mean(self, system: str, category: int | None = None, *, start: int = 0) -> tuple[tuple[float, ...], int]:
        """Mean recalls at KS (and how many questions) of ``system``, from its ``start``-th question on."""
        picked = [r for c, r in self.rows.get(system, [])[start:] if category is None or c == category]
        if not picked:
            return tuple(float("nan") for _ in KS), 0
        return tuple(float(x) for x in np.mean(np.array(picked), axis=0)), len(picked)

    def table(self) -> str:
        """A markdown table: one row per (category, system), R@1/5/10/20."""
        lines = ["| questions | n | system | R@1 | R@5 | R@10 | R@20 |", "|---|---:|---|---:|---:|---:|---:|"]
        for category in (None, *CATEGORIES):
            label = "all" if category is None else f"{category} {CATEGORIES[category]}"
            for system in SYSTEMS:
                values, n = self.mean(system, category)
                cells = " | ".join(f"{v:.3f}" for v in values)
                name = f"**{system}**" if system == "@memory" else system
                lines.append(f"| {label} | {n} | {name} | {cells} |")
        return "\n".join(lines)


def ranked_dia(order: Sequence[int], turns: Sequence[Turn]) -> list[str | None]:
    return [turns[i].dia_id for i in order]


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[int]:
    """Plain reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: -item[1])]


# --- baselines --------------------------------------------------------------------------------------


def baselines(
    turns: Sequence[Turn], questions: Sequence[Question], embedder: Embedder, scores: Scores, *, text: str
) -> None:
    """BM25 (bm25s), dense (exact cosine) and their RRF over the same turns, scored into ``scores``."""
    import bm25s

    try:
        import Stemmer

        stemmer: Any = Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is optional for bm25s
        stemmer = None
    docs = [t.text if text == "raw" else f"{t.speaker}: {t.text}" for t in turns]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    depth = min(DEPTH, len(docs))
    doc_vectors = embedder.encode(docs)
    query_vectors = embedder.encode([q.text for q in questions])
    similarity = query_vectors @ doc_vectors.T
    for qi, question in enumerate(questions):
        found, values = retriever.retrieve(
            bm25s.tokenize([question.text], stopwords="en", stemmer=stemmer, show_progress=False),
            k=depth, show_progress=False,
        )
        sparse = [int(d) for d, v in zip(found[0], values[0], strict=True) if v > 0]
        dense = [int(i) for i in np.argsort(-similarity[qi], kind="stable")[:depth]]
        scores.add("BM25", question, ranked_dia(sparse, turns))
        scores.add("dense", question, ranked_dia(dense, turns))
        scores.add("RRF", question, ranked_dia(rrf([dense, sparse]), turns))


# --- @memory through the mesh -----------------------------------------------------------------------


@dataclass(slots=True)
class Timing:
    turns: int = 0
    questions: int = 0
    ingest_s: float = 0.0
    ask_s: float = 0.0


async def run_memory(
    sample: dict[str, Any],
    turns: Sequence[Turn],
    questions: Sequence[Question],
    config: Config,
    embedder: Embedder,
    scores: Scores,
    timing: Timing,
    *,
    mode: str,
    ask_concurrency: int,
) -> None:
    """A fresh daemon on its own nats-server; report every turn, ask every question, score the answers."""
    daemon = MemoryDaemon(config, embedder=embedder)
    await daemon.start()
    agents: dict[str, AsyncAgent] = {}
    started_agents: list[AsyncAgent] = []
    try:
        url = daemon.nats_url
        for speaker in sorted({t.speaker for t in turns}):
            agents[speaker] = AsyncAgent(handle_of(speaker), servers=url,
                                         manifest=Manifest(description=f"LoCoMo speaker {speaker}"))
        asker = AsyncAgent("locomo-bench", servers=url, manifest=Manifest(description="asks LoCoMo questions"))
        for agent in (*agents.values(), asker):
            await agent.start()
            started_agents.append(agent)
            await agent.register()

        async def report_session(session: Sequence[Turn]) -> None:
            for turn in session:  # in order: each turn once the previous one is stored
                reply = await agents[turn.speaker].request(
                    config.handle, json.dumps(turn.payload()), content_type="application/json",
                    trace_id=f"{sample['sample_id']}-s{turn.session}", timeout=300,
                )
                if json.loads(reply.payload).get("status") != "stored":
                    raise RuntimeError(f"{turn.dia_id} was not stored: {reply.payload[:200]}")

        sessions: dict[int, list[Turn]] = {}
        for turn in turns:
            sessions.setdefault(turn.session, []).append(turn)
        started = time.perf_counter()
        await asyncio.gather(*(report_session(s) for s in sessions.values()))
        timing.ingest_s += time.perf_counter() - started
        timing.turns += len(turns)
        await daemon.wait_embedded(timeout=1800)  # acknowledged once committed, embedded behind

        as_of = max(t.when for t in turns).replace(tzinfo=UTC).isoformat()
        gate = asyncio.Semaphore(ask_concurrency)

        async def ask(question: Question) -> None:
            body = {"query": question.text, "limit": max(KS), "as_of": as_of, "mode": mode}
            async with gate:
                reply = await asker.request(config.handle, json.dumps(body), content_type="application/json",
                                            timeout=300)
            answer = json.loads(reply.payload)
            if "events" not in answer:
                raise RuntimeError(f"question {question.text[:60]!r} got {reply.payload[:200]}")
            scores.add("@memory", question, [e["payload"].get("dia_id") for e in answer["events"]])

        started = time.perf_counter()
        await asyncio.gather(*(ask(q) for q in questions))
        timing.ask_s += time.perf_counter() - started
        timing.questions += len(questions)
    finally:
        for agent in started_agents:
            await agent.close()
        await daemon.close()


# --- report -----------------------------------------------------------------------------------------


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine() -> str:
    cpu = "unknown CPU"
    memory = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {memory} RAM, {cpu}, {platform.system()} {platform.release()}; load average {load}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_to_docs(section: str) -> None:
    """Add ``section`` at the end of this script's part of docs/benchmarks.md (made if missing)."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else INTRO
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{SECTION_INTRO}"
    start = text.index(HEADING) + len(HEADING)
    following = text.find("\n## ", start)
    end = len(text) if following < 0 else following + 1
    body = text[:end].rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    rest = text[end:]
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS.write_text(body + ("\n" + rest if rest else ""))


def parse_settings(settings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["retrieval.context_window=0", 'embedding.backend="onnx-int8"']`` -> ``{section: {key: value}}``.

    Values are TOML literals (``0``, ``0.5``, ``"rrf"``); a bare word is taken as a string. Raises
    ``SystemExit`` naming a setting that is not ``section.key=value``.
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


async def main_async(args: argparse.Namespace) -> None:
    samples = json.loads(args.data.read_text())[: args.conversations]
    overrides: dict[str, Any] = {"nats_url": "", "embedded_nats_port": 0, "log_level": "WARNING"}
    base = load_config(args.config)
    settings = list(args.set)
    # No HTTP listener unless asked (--set http.listen=...): runs side by side must not share a port.
    overrides["http"] = {**base.http.model_dump(), "listen": ""}
    if args.backend:
        settings.append(f'embedding.backend="{args.backend}"')
    for section, values in parse_settings(settings).items():
        overrides[section] = {**getattr(base, section).model_dump(), **values}
    with tempfile.TemporaryDirectory(prefix="locomo-bench-") as tmp:
        root = Path(tmp)
        config = load_config(args.config, data_dir=root / "conv-0", **overrides)
        started = time.perf_counter()
        embedder = await asyncio.to_thread(load_embedder, config.embedding, data_dir=root)
        load_s = time.perf_counter() - started
        print(f"model {embedder.name} ({config.embedding.backend}) loaded in {load_s:.1f} s; "
              f"retrieval {config.retrieval.model_dump()}; mode {args.mode}", flush=True)
        scores = Scores()
        timing = Timing()
        skipped = 0
        per_conversation: list[str] = []
        wall = time.perf_counter()
        for number, sample in enumerate(samples):
            turns = read_turns(sample["conversation"])
            questions, dropped = read_questions(sample, {t.dia_id for t in turns})
            skipped += dropped
            conv_config = load_config(args.config, data_dir=root / f"conv-{number}", **overrides)
            before = (timing.ingest_s, timing.ask_s)
            first = len(scores.rows.get("@memory", []))
            await run_memory(sample, turns, questions, conv_config, embedder, scores, timing,
                             mode=args.mode, ask_concurrency=args.ask_concurrency)
            await asyncio.to_thread(baselines, turns, questions, embedder, scores, text=args.baseline_text)
            ingest, ask = timing.ingest_s - before[0], timing.ask_s - before[1]
            recall = scores.mean("@memory", start=first)[0]
            per_conversation.append(f"{sample['sample_id']} {recall[1]:.3f}/{recall[2]:.3f}")
            print(f"{sample['sample_id']}: {len(turns)} turns in {ingest:.1f} s ({len(turns) / ingest:.0f}/s), "
                  f"{len(questions)} questions in {ask:.1f} s; @memory R@5 {recall[1]:.3f} "
                  f"R@10 {recall[2]:.3f}", flush=True)
        wall_s = time.perf_counter() - wall
    table = scores.table()
    summary = (
        f"{len(samples)} conversations, {timing.turns} turns, {timing.questions} questions "
        f"({skipped} without a usable evidence id left out); wall {wall_s:.0f} s; ingest through the mesh "
        f"{timing.turns / timing.ingest_s:.0f} turns/s; questions {timing.questions / timing.ask_s:.1f}/s"
    )
    print()
    print(table)
    print()
    print(summary)
    print("@memory R@5/R@10 per conversation: " + ", ".join(per_conversation))
    if args.no_write:
        return
    r = config.retrieval
    baseline_text = "raw turn text" if args.baseline_text == "raw" else '"Speaker: text"'
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("torch", "sentence-transformers", "faiss-cpu", "bm25s")
    )
    section = "\n".join([
        f"### {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- command: `python bench/locomo.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"- machine: {machine()}",
        f"- versions: Python {platform.python_version()}, {versions}; commit {commit()}",
        f"- embedder: {embedder.name} ({config.embedding.backend}); question mode: {args.mode}; "
        f"baselines on {baseline_text}",
        f"- [retrieval] fusion={r.fusion} dense_weight={r.dense_weight} candidates={r.candidates} "
        f"rrf_k={r.rrf_k} context_window={r.context_window} context_weight={r.context_weight}",
        f"- {summary}",
        f"- @memory R@5/R@10 per conversation: {', '.join(per_conversation)}",
        "",
        table,
    ])
    append_to_docs(section)
    print(f"\nappended to {BENCHMARKS.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10, help="how many of the 10 conversations (first N)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of locomo10.json")
    parser.add_argument("--config", type=Path, default=None, help="memory-agent TOML config (e.g. [retrieval] keys)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config value over --config, e.g. --set retrieval.context_window=0 (repeatable)")
    parser.add_argument("--backend", choices=("torch", "onnx", "onnx-int8"), default=None,
                        help="sets [embedding] backend (same as --set embedding.backend=...)")
    parser.add_argument("--mode", choices=("search", "auto"), default="search",
                        help='structured question "mode": search (ranked search) or auto (the rules choose)')
    parser.add_argument("--baseline-text", choices=("raw", "speaker"), default="raw",
                        help='text of the BM25/dense baselines: the raw turn, or "Speaker: text"')
    parser.add_argument("--ask-concurrency", type=int, default=8, help="questions in flight at once")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"{args.data} not found: pass --data with the path of locomo10.json")
    if args.conversations < 1:
        parser.error("--conversations must be at least 1")
    try:
        import bm25s  # noqa: F401
    except ImportError:
        parser.error('bm25s is not installed: pip install -e ".[bench]"')
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its own logger to DEBUG on import
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
