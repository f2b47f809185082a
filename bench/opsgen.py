"""Generate, check and show the labelled ops set: a seeded ops history and questions with gold answers.

    python bench/opsgen.py                          # generate (seed 11), check, print a summary
    python bench/opsgen.py -o /tmp/ops.json         # ... and write the set as JSON
    python bench/opsgen.py --check --in /tmp/ops.json   # check a written set; exit 1 on any problem
    python bench/opsgen.py --sample 6               # a markdown sample of reports and questions

Six weeks of a fleet's reports up to a Thursday afternoon (``--as-of``): deploys, rollbacks, flaky and
quarantined tests, anomalies, root causes, config changes and incidents from 12 agents about 18
services, on trace ids of eight shapes (``t-81``, ``t-9f3ac2``, ``req_7b1e0c``, ``a1b2c3d4``, UUIDs,
``INC-2041``, ULIDs, ``rel-2026-11-20-3``), with reports arriving late and out of order; then about
330 questions of nine kinds (list, count, window, entity, timeline, why, ranked, paraphrase,
no_answer) whose gold is computed from the reports by the rules in ``bench/opsset/model.py``. The
same seed gives the same set, byte for byte. See docs/opsbench.md for a sample and
``bench/opsbench.py`` to run it against @memory.

``--check`` re-derives every gold answer from the reports as they are sent, verifies that each
paraphrase question shares no content word (Porter or Snowball stem) with its gold report, that each
ranked question shares at least two with its gold and that no other report holds all of them, that
no-answer questions are about nothing stored, and that a full set has enough of each kind, late and
out-of-order reports and every trace shape. It prints each problem and exits 1 if there is any.
Needs PyStemmer (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ itself: python bench/opsgen.py

from opsset import DEFAULT_AS_OF, DEFAULT_SEED, DEFAULT_WEEKS, OpsSet, check, generate, summary
from opsset.model import KINDS


def load(path: Path) -> OpsSet:
    """A set written by ``opsgen.py -o``. Raises ``SystemExit`` naming what is wrong with the file."""
    try:
        return OpsSet.from_json(json.loads(path.read_text()))
    except OSError as exc:
        raise SystemExit(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path} is not an ops set: {exc}") from None


def sample(ops: OpsSet, n: int) -> str:
    """Markdown: ``n`` reports of an incident's trace and a few others as sent, and ``n`` questions of
    each kind with the size of their gold."""
    reports = ops.reports
    incident = next(r for r in reports if r.meta.get("part") == "cause")
    chain = sorted((r for r in reports if r.trace_id == incident.trace_id), key=lambda r: r.index)
    others = [r for r in reports if r.trace_id != incident.trace_id][:: max(1, len(reports) // max(n, 1))][:n]
    lines = [f"Reports of one incident (trace `{incident.trace_id}`) in the order they were sent, then "
             f"{len(others)} others (index: handle, payload):", ""]
    for r in [*chain, *others]:
        late = f" (received {r.meta['received_at']})" if r.meta["received_at"][:13] != r.meta["occurred_at"][:13] else ""
        envelope = f", envelope trace `{r.envelope_trace_id}`" if r.envelope_trace_id else ""
        lines.append(f"- #{r.index} @{r.handle}{envelope}{late}: `{json.dumps(r.payload, ensure_ascii=False)}`")
    lines += ["", f"Questions (as_of {ops.as_of}; gold = report indices):", ""]
    for kind in KINDS:
        for q in [q for q in ops.questions if q.kind == kind][:n]:
            gold = f"count {q.count}" if q.kind == "count" else (f"{len(q.gold)} reports" if len(q.gold) > 3
                                                                else ", ".join(f"#{i}" for i in q.gold) or "nothing")
            lines.append(f"- {kind}: \"{q.text}\" -> {gold}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the history (default {DEFAULT_SEED})")
    parser.add_argument("--weeks", type=int, default=DEFAULT_WEEKS, help=f"weeks of history (default {DEFAULT_WEEKS})")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF, help=f"the set's now, ISO-8601 UTC (default {DEFAULT_AS_OF})")
    parser.add_argument("--in", dest="source", type=Path, help="read this set instead of generating one")
    parser.add_argument("-o", "--out", type=Path, help="write the set as JSON here")
    parser.add_argument("--check", action="store_true", help="check the set; exit 1 on any problem")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="print a markdown sample: an incident and N other reports, N questions per kind")
    args = parser.parse_args()
    if args.weeks < 1:
        parser.error("--weeks must be at least 1")
    started = time.perf_counter()
    if args.source:
        ops = load(args.source)
    else:
        try:
            ops = generate(args.seed, as_of=args.as_of, weeks=args.weeks)
        except ValueError as exc:
            parser.error(str(exc))
    print(summary(ops))
    print(f"({'read' if args.source else 'generated'} in {time.perf_counter() - started:.1f} s)")
    if args.out:
        args.out.write_text(ops.dumps())
        print(f"wrote {args.out}")
    if args.sample:
        print()
        print(sample(ops, args.sample))
    if args.check:
        started = time.perf_counter()
        problems = check(ops, full=True)
        for problem in problems:
            print(f"problem: {problem}")
        print(f"check: {len(problems)} problems in {len(ops.reports)} reports and {len(ops.questions)} questions "
              f"({time.perf_counter() - started:.1f} s)")
        if problems:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
