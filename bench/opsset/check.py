"""Checks of a labelled ops set, from its JSON alone: reports readable as @memory reads them, every gold
answer re-derived from the reports, and the paraphrase property.

Each check reads the reports as they are sent (``occurred_at`` from the payload in whatever form it was
written, the trace id from the payload or else the envelope) and compares them with the generator's own
record (``meta``), then recomputes each question's gold from its ``spec`` with the rules of
:mod:`opsset.model`. :func:`check` returns the problems found, each a sentence naming the report or
question; an empty list means the set is consistent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .model import (
    EXACT_KINDS,
    KINDS,
    TRACE_SHAPES,
    OpsQuestion,
    OpsSet,
    Report,
    content_stems,
    iso_seconds,
    payload_time,
    report_text,
    select,
    trace_reports,
    why_choice,
)
from .questions import trace_shape

MINIMUM: dict[str, int] = {"paraphrase": 40, "no_answer": 20, "list": 20, "count": 20, "window": 20, "entity": 20,
                           "timeline": 40, "why": 15, "ranked": 20}
"""Questions of each kind a full set must have (``check(..., full=True)``)."""
LATE_SECONDS = 3600.0


def check_reports(reports: Sequence[Report], as_of: float) -> list[str]:
    """Problems of the reports themselves (see the module docstring)."""
    problems: list[str] = []
    previous = float("-inf")
    for n, r in enumerate(reports):
        where = f"report {r.index}"
        if r.index != n:
            problems.append(f"{where}: index {r.index} at position {n}")
        if not isinstance(r.payload.get("event"), str) or not r.payload["event"]:
            problems.append(f"{where}: no event")
            continue
        try:
            written = payload_time(r.payload.get("occurred_at"))
        except (ValueError, OverflowError) as exc:
            problems.append(f"{where}: occurred_at unreadable ({exc})")
            continue
        if abs(written - r.occurred_at) > 0.001:
            problems.append(f"{where}: occurred_at {r.payload['occurred_at']!r} is not meta {r.meta['occurred_at']}")
        sent_trace = r.payload.get("trace_id", r.envelope_trace_id)
        if sent_trace != r.trace_id:
            problems.append(f"{where}: sends trace {sent_trace!r}, meta says {r.trace_id!r}")
        if r.occurred_at > as_of:
            problems.append(f"{where}: occurred after as_of")
        received = iso_seconds(r.meta["received_at"])
        if received + 0.001 < r.occurred_at:
            problems.append(f"{where}: received before it occurred")
        if received + 0.001 < previous:
            problems.append(f"{where}: sent before the report received ahead of it")
        previous = max(previous, received)
    return problems


def _delivery_stats(reports: Sequence[Report]) -> tuple[int, int]:
    """(reports received over an hour late, reports sent after one that occurred later)."""
    late = sum(1 for r in reports if iso_seconds(r.meta["received_at"]) - r.occurred_at > LATE_SECONDS)
    out_of_order = 0
    latest = float("-inf")
    for r in reports:
        if r.occurred_at < latest:
            out_of_order += 1
        latest = max(latest, r.occurred_at)
    return late, out_of_order


def check_question(q: OpsQuestion, reports: Sequence[Report], as_of: float, stems: list[set[str]]) -> list[str]:
    """Problems of one question: its gold re-derived from the reports, and the property its kind needs."""
    where = f"{q.id} ({q.kind}) {q.text!r}"
    if any(not 0 <= i < len(reports) for i in q.gold):
        return [f"{where}: gold index out of range"]
    problems: list[str] = []
    gold = [reports[i] for i in q.gold]
    spec = q.spec
    if q.kind in EXACT_KINDS - {"timeline"}:
        expected = [r.index for r in select(reports, spec, as_of)]
        if list(q.gold) != expected:
            problems.append(f"{where}: gold {len(q.gold)} reports, the spec selects {len(expected)}")
        if q.kind == "count" and q.count != len(expected):
            problems.append(f"{where}: count {q.count}, the spec selects {len(expected)}")
    elif q.kind == "timeline":
        if q.trace is None or q.trace not in q.text:
            problems.append(f"{where}: the trace is not in the question")
        expected = [r.index for r in trace_reports(reports, q.trace or "")]
        if not expected or list(q.gold) != expected:
            problems.append(f"{where}: gold is not the timeline of {q.trace}")
    elif q.kind == "why":
        candidates = select(reports, spec, as_of)
        chosen = why_choice(candidates, reports)
        if chosen is None or not gold or gold[0].index != chosen.index or q.trace != chosen.trace_id:
            problems.append(f"{where}: gold is not the candidate whose trace explains it")
        if any(r not in candidates or r.trace_id != q.trace for r in gold):
            problems.append(f"{where}: a gold report is not a matching report of the chosen trace")
    elif q.kind == "ranked":
        words = content_stems(q.text)
        shared = words & stems[gold[0].index] if gold else set()
        if len(shared) < 2:
            problems.append(f"{where}: shares {sorted(shared)} with its gold, not a ranked question")
        others = [r.index for r in reports if r.index not in q.gold and shared <= stems[r.index]]
        if shared and others:
            problems.append(f"{where}: reports {others[:5]} hold every shared word {sorted(shared)} too")
    elif q.kind == "paraphrase":
        words = content_stems(q.text)
        if not gold:
            problems.append(f"{where}: no gold")
        for r in gold:
            common = words & stems[r.index]
            if common:
                problems.append(f"{where}: shares {sorted(common)} with report {r.index}")
    elif q.kind == "no_answer":
        if q.gold:
            problems.append(f"{where}: a no-answer question has gold")
        problems += _check_absent(where, spec, reports, as_of, stems)
    return problems


def _check_absent(where: str, spec: dict[str, object], reports: Sequence[Report], as_of: float,
                  stems: list[set[str]]) -> list[str]:
    problems: list[str] = []
    words = spec.get("absent_words")
    if isinstance(words, list):
        absent = content_stems(" ".join(words))
        hits = [r.index for r in reports if absent & stems[r.index]]
        if hits:
            problems.append(f"{where}: reports {hits[:5]} mention {sorted(absent)}")
    service = spec.get("absent_service")
    if isinstance(service, str) and any(service in report_text(r) for r in reports):
        problems.append(f"{where}: service {service} occurs in a report")
    handle = spec.get("absent_handle")
    if isinstance(handle, str) and any(r.handle == handle or handle in report_text(r) for r in reports):
        problems.append(f"{where}: handle {handle} occurs in a report")
    trace = spec.get("absent_trace")
    if isinstance(trace, str) and any(r.trace_id.lower() == trace.lower() for r in reports):
        problems.append(f"{where}: trace {trace} is stored")
    if spec.get("empty") and select(reports, spec, as_of):
        problems.append(f"{where}: reports match a question about nothing")
    if not any(k in spec for k in ("absent_words", "absent_service", "absent_handle", "absent_trace", "empty")):
        problems.append(f"{where}: the spec says nothing about what is absent")
    return problems


def check(ops: OpsSet, *, full: bool = True) -> list[str]:
    """Every problem of ``ops`` (empty = consistent). ``full``: also require the sizes of a full set
    (:data:`MINIMUM` questions of each kind, late and out-of-order reports, every trace shape asked)."""
    as_of = iso_seconds(ops.as_of)
    reports = ops.reports
    problems = check_reports(reports, as_of)
    stems = [content_stems(report_text(r)) for r in reports]
    ids = Counter(q.id for q in ops.questions)
    texts = Counter(q.text.lower() for q in ops.questions)
    problems += [f"question id {i} used {n} times" for i, n in ids.items() if n > 1]
    problems += [f"question {t!r} asked {n} times" for t, n in texts.items() if n > 1]
    for q in ops.questions:
        if q.as_of != ops.as_of:
            problems.append(f"{q.id}: as_of {q.as_of} is not the set's {ops.as_of}")
        problems += check_question(q, reports, as_of, stems)
    if full:
        kinds = Counter(q.kind for q in ops.questions)
        for kind in KINDS:
            if kinds[kind] < MINIMUM[kind]:
                problems.append(f"only {kinds[kind]} {kind} questions (a full set has at least {MINIMUM[kind]})")
        late, out_of_order = _delivery_stats(reports)
        if late < 0.03 * len(reports) or out_of_order == 0:
            problems.append(f"{late} reports over an hour late and {out_of_order} out of order: too few")
        shapes = {trace_shape(q.trace or "") for q in ops.questions if q.kind == "timeline"}
        missing = sorted(set(TRACE_SHAPES) - shapes)
        if missing:
            problems.append(f"no timeline question for trace shapes {missing}")
    return problems


def summary(ops: OpsSet) -> str:
    """A few lines on what the set holds: reports by event and handle, delivery, questions by kind."""
    reports = ops.reports
    late, out_of_order = _delivery_stats(reports)
    events = Counter(r.event for r in reports)
    handles = Counter(r.handle for r in reports)
    traces = Counter(trace_shape(r.trace_id) for r in {r.trace_id: r for r in reports}.values())
    kinds = Counter(q.kind for q in ops.questions)
    first = min(r.meta["occurred_at"] for r in reports)
    in_payload = sum(1 for r in reports if "trace_id" in r.payload)
    return "\n".join([
        f"seed {ops.seed}, as_of {ops.as_of}: {len(reports)} reports from {first} on, "
        f"{len({r.service for r in reports if r.service})} services, {len(handles)} handles, "
        f"{len({r.trace_id for r in reports})} traces",
        "events: " + ", ".join(f"{e} {n}" for e, n in events.most_common()),
        "handles: " + ", ".join(f"{h} {n}" for h, n in handles.most_common()),
        "trace shapes: " + ", ".join(f"{s} {n}" for s, n in sorted(traces.items())),
        f"delivery: {late} reports over an hour late, {out_of_order} sent after a report that occurred later, "
        f"{in_payload} with trace_id in the payload ({len(reports) - in_payload} on the envelope only)",
        f"questions: {len(ops.questions)} (" + ", ".join(f"{k} {kinds[k]}" for k in KINDS) + ")",
    ])
