"""The ops set generator (bench/opsset): same seed, same set; gold consistent; the check catches breakage.

Pure: no model, no server. A two-week history keeps each generation well under a second.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from opsset import OpsSet, check, content_stems, generate, report_text
from opsset.model import select, window_bounds
from opsset.questions import trace_shape

AS_OF = "2026-11-26T15:30:00Z"  # a Thursday


@pytest.fixture(scope="module")
def small() -> OpsSet:
    return generate(7, as_of=AS_OF, weeks=2)


def test_same_seed_same_bytes_other_seed_other_set(small: OpsSet) -> None:
    again = generate(7, as_of=AS_OF, weeks=2)
    assert again.dumps() == small.dumps()
    other = generate(8, as_of=AS_OF, weeks=2)
    assert other.dumps() != small.dumps()
    assert OpsSet.from_json(json.loads(small.dumps())).dumps() == small.dumps()


def test_small_history_is_consistent_and_has_every_kind(small: OpsSet) -> None:
    assert check(small, full=False) == []
    kinds = {q.kind for q in small.questions}
    assert kinds == {"list", "count", "window", "entity", "timeline", "why", "ranked", "paraphrase", "no_answer"}
    assert {trace_shape(q.trace or "") for q in small.questions if q.kind == "timeline"} >= {"tnum", "thex", "req", "uuid"}
    # late and out-of-order delivery: some report is sent after one that happened later
    times = [r.occurred_at for r in small.reports]
    assert any(later < earlier for earlier, later in itertools.pairwise(times))


def test_paraphrases_share_no_content_word_with_their_gold(small: OpsSet) -> None:
    paraphrases = [q for q in small.questions if q.kind == "paraphrase"]
    assert len(paraphrases) >= 40
    for q in paraphrases:
        for i in q.gold:
            assert not content_stems(q.text) & content_stems(report_text(small.reports[i])), q.text


def test_stems_count_inflections_as_shared() -> None:
    assert content_stems("deployments anomalies quarantined rolled") >= content_stems("deploys anomaly quarantine roll")
    assert not content_stems("the of which when") and content_stems("because") == {"becaus"}


def test_exact_gold_is_what_the_spec_selects(small: OpsSet) -> None:
    as_of = datetime.fromisoformat(AS_OF).timestamp()
    for q in small.questions:
        if q.kind in ("list", "count", "window", "entity"):
            assert list(q.gold) == [r.index for r in select(small.reports, q.spec, as_of)], q.text
        if q.kind == "timeline":
            assert {small.reports[i].trace_id for i in q.gold} == {q.trace}
            assert len(q.gold) == sum(1 for r in small.reports if r.trace_id == q.trace)


def test_check_finds_a_shared_word_a_wrong_gold_and_a_misread_time(small: OpsSet) -> None:
    para = next(q for q in small.questions if q.kind == "paraphrase")
    word = small.reports[para.gold[0]].payload["service"]
    broken = dataclasses.replace(para, text=f"{para.text} ({word})")
    listed = next(q for q in small.questions if q.kind == "list" and len(q.gold) > 1)
    short = dataclasses.replace(listed, gold=listed.gold[1:])
    questions = tuple(broken if q is para else short if q is listed else q for q in small.questions)
    r0 = small.reports[0]
    moved = dataclasses.replace(r0, payload={**r0.payload, "occurred_at": "2026-11-26T00:00:00+02:00"})
    bad = dataclasses.replace(small, questions=questions, reports=(moved, *small.reports[1:]))
    problems = check(bad, full=False)
    assert any(para.id in p and "shares" in p for p in problems)
    assert any(listed.id in p and "the spec selects" in p for p in problems)
    assert any(p.startswith("report 0: occurred_at") for p in problems)


@pytest.mark.parametrize(
    ("rule", "since", "until"),
    [
        ("today", "2026-11-26", "2026-11-27"),
        ("this_week", "2026-11-23", "2026-11-30"),
        ("last_week", "2026-11-16", "2026-11-23"),
        ("weekday:friday", "2026-11-20", "2026-11-21"),
        ("weekday:thursday", "2026-11-19", "2026-11-20"),  # "on Thursday" on a Thursday: a week ago
        ("between:2026-11-03:2026-11-05", "2026-11-03", "2026-11-06"),
        ("last_month", "2026-10-01", "2026-11-01"),
        ("days_ago:3", "2026-11-23", "2026-11-24"),
    ],
)
def test_window_rules_follow_the_readme(rule: str, since: str, until: str) -> None:
    def day(text: str) -> float:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()

    assert window_bounds(rule, day("2026-11-26") + 15.5 * 3600) == (day(since), day(until))


def test_rolling_windows_are_open_ended() -> None:
    as_of = datetime(2026, 11, 26, 15, 30, tzinfo=UTC).timestamp()
    assert window_bounds("rolling_days:7", as_of) == (as_of - 7 * 86400, None)
    assert window_bounds("rolling_hours:24", as_of) == (as_of - 86400, None)
