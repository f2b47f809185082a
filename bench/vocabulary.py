"""The vocabulary of names questions are read against, at 1,000 and at 100,000 distinct names (issue 14).

    python bench/vocabulary.py                    # 1,000 and 100,000 names of each kind
    python bench/vocabulary.py --sizes 1000,20000 --no-append

For each size: ``--sizes`` distinct event types, services and handles (shaped like real ones:
``payments-worker-3f2a``, ``rollback_canary_17``, ``deploy-bot-12``) are indexed by
``VocabularyIndex.build`` (what the daemon does at start, off the event loop), then ``--adds`` new names of
each kind are added one report at a time (what ingest does for each committed batch, on the event loop),
then ``--questions`` questions naming some of them are read by ``understand`` (the step of every answer
that looks names up). Prints build seconds, microseconds per added report and the question-reading
latency p50 / p99 / max, and appends the table to docs/benchmarks.md. Target: question latency at
100,000 names no worse than at 1,000 (the old vocabulary stalled the first question after a new name for
7.5 s at 20,000 names).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import append_doc, machine

from memory_agent.query.understand import understand
from memory_agent.query.vocabulary import VocabularyIndex
from memory_agent.types import Vocabulary

SECTION = "## Vocabulary of names (bench/vocabulary.py)"
INTRO = (
    "Names questions are read against (event types, services, handles), indexed at start and grown per report. "
    "Build time, cost per added report, and `understand` latency on questions naming stored names, at 1,000 and "
    "100,000 names of each kind, in one process. Target (issue 14): question latency unaffected by the number of "
    "names."
)

_WORDS = ("rollback", "deploy", "canary", "flaky", "test", "anomaly", "latency", "error", "queue", "cache",
          "payments", "checkout", "billing", "search", "auth", "gateway", "worker", "scheduler", "ingest")


def names(kind: str, n: int, rng: random.Random) -> list[str]:
    """``n`` distinct names of one kind, shaped like real ones."""
    out: set[str] = set()
    while len(out) < n:
        a, b = rng.sample(_WORDS, 2)
        suffix = f"{rng.randrange(16**4):04x}"
        out.add({"event": f"{a}_{b}_{rng.randrange(1000)}", "service": f"{a}-{b}-{suffix}",
                 "handle": f"{a}-bot-{rng.randrange(100000)}"}[kind])
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(size: int, *, adds: int, questions: int, seed: int) -> tuple[float, float, list[float]]:
    rng = random.Random(seed)
    events, services, handles = (names(k, size, rng) for k in ("event", "service", "handle"))
    started = time.perf_counter()
    index = VocabularyIndex.build(Vocabulary(frozenset(events), frozenset(services), frozenset(handles)))
    built = time.perf_counter() - started
    new = [SimpleNamespace(event=f"new_event_{i}", service=f"new-service-{i}", from_handle=f"new-bot-{i}")
           for i in range(adds)]
    started = time.perf_counter()
    for report in new:
        index.add(events=(report.event,), services=(report.service,), handles=(report.from_handle,))
    per_add = (time.perf_counter() - started) / max(adds, 1)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for _ in range(20):  # warm-up: compiled patterns and caches, not timed
        understand(f"What rollbacks of {services[0]} happened today?", now=now, tz=UTC, vocabulary=index)
    latencies: list[float] = []
    for i in range(questions):
        service, event = rng.choice(services), rng.choice(events)
        text = rng.choice((f"What rollbacks of {service} happened in the last 7 days?",
                           f"How many {event.replace('_', ' ')} events this week?",
                           f"Why did {service} roll back on Friday?",
                           f"What did new-bot-{i % max(adds, 1)} report today?"))
        started = time.perf_counter()
        understand(text, now=now, tz=UTC, vocabulary=index)
        latencies.append(time.perf_counter() - started)
    return built, per_add, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated numbers of names of each kind")
    parser.add_argument("--adds", type=int, default=2000, help="reports with new names added after the build")
    parser.add_argument("--questions", type=int, default=2000, help="questions read per size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = ["| names of each kind | build s | µs per added report | question read p50 / p99 / max ms |",
            "|---|---|---|---|"]
    for size in sizes:
        built, per_add, lat = run(size, adds=args.adds, questions=args.questions, seed=args.seed)
        rows.append(f"| {size:,} | {built:.2f} | {per_add * 1e6:.1f} | {pct(lat, 0.5) * 1e3:.2f} / "
                     f"{pct(lat, 0.99) * 1e3:.2f} / {max(lat) * 1e3:.2f} |")
        print(rows[-1], flush=True)
    lines = [*rows, "", f"{args.adds} reports with new names added after each build; {args.questions} questions "
             "per size (service, event and handle names drawn from the vocabulary).",
             f"Load average: {machine().rsplit('load average at the end', 1)[-1].strip()}."]
    print("\n".join(rows))
    if not args.no_append:
        command = "python bench/vocabulary.py" + ("" if args.sizes == "1000,100000" else f" --sizes {args.sizes}")
        append_doc(lines, command, section=SECTION, intro=INTRO)
        print("appended to docs/benchmarks.md")


if __name__ == "__main__":
    main()
