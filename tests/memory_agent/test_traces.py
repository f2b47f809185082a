"""Trace ids of any shape in questions (pure: understand() with the store's lookup result given).

A token is a trace id when it equals a stored one (``traces``, what ``EventStore.known_traces`` found for
``trace_candidates``); ids written after "trace", UUIDs, ``t-81`` and prefixed ids (``req_7b1e0c``) are
taken even when not stored, so the answer can say so; versions, hashes in text and times are not.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from memory_agent.query.understand import trace_candidates, understand
from memory_agent.types import Understanding, Vocabulary

NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
VOCAB = Vocabulary(
    events=frozenset({"rollback", "deploy", "anomaly", "root_cause"}),
    services=frozenset({"api-gateway", "checkout-2024", "ledger"}),
    handles=frozenset({"deploy", "monitor", "release-manager"}),
)
# One stored trace id of each shape the ops set uses (bench/opsset/model.py TRACE_SHAPES).
STORED = (
    "t-81", "t-9f3ac2", "req_7b1e0c", "a1b2c3d4", "3f1c2a9e-1b2c-4d5e-8f90-123456789abc", "INC-2041",
    "01JECYES6STNJ697N8FWEA46SK", "rel-2026-11-20-3", "conv-26-s1",
)


def ask(question: str, stored: tuple[str, ...] = STORED) -> Understanding:
    """understand() as the answerer calls it: the candidates looked up among ``stored``."""
    known = {c: c for c in trace_candidates(question) if c in stored}
    return understand(question, now=NOW, tz=ZoneInfo("UTC"), vocabulary=VOCAB, traces=known)


@pytest.mark.parametrize("trace", STORED)
@pytest.mark.parametrize("template", [
    "Give me the timeline of {}",
    "timeline for trace {}",
    "What happened with {}?",
    "Why did {} roll back?",
    "How many events carry {}?",
    "show me {}, please",
])
def test_a_stored_trace_id_of_any_shape_is_recognised(template: str, trace: str) -> None:
    u = ask(template.format(trace))
    assert u.filters.trace_id == (trace,)
    assert any(trace in note for note in u.notes)


def test_case_of_the_written_id_does_not_matter_when_it_is_stored() -> None:
    assert ask("timeline of inc-2041").filters.trace_id == ("INC-2041",)
    assert ask("timeline of REQ_7B1E0C").filters.trace_id == ("req_7b1e0c",)


def test_a_stored_id_holding_a_date_is_a_trace_not_a_window() -> None:
    u = ask("What happened in rel-2026-11-20-3?")
    assert u.filters.trace_id == ("rel-2026-11-20-3",)
    assert u.window is None


@pytest.mark.parametrize("question, trace", [
    ("Give me the timeline of t-9f3ac9", "t-9f3ac9"),  # shaped like a trace id
    ("History of req_4b7b89?", "req_4b7b89"),
    ("What happened in INC-5771?", "INC-5771"),
    ("timeline of trace abc-17", "abc-17"),  # after the word "trace"
    ("Show the sequence of events for trace 01JECYES6STNJ697N8FWEA46SX.", "01JECYES6STNJ697N8FWEA46SX"),
    ("History of e775fd7b-41f1-484b-bba9-d87a09eeae80?", "e775fd7b-41f1-484b-bba9-d87a09eeae80"),
    ("Give me the timeline of b6707179", "b6707179"),  # what the timeline is of
    ("why did t-512 fail", "t-512"),
])
def test_an_id_asked_for_is_taken_even_when_not_stored(question: str, trace: str) -> None:
    assert ask(question).filters.trace_id == (trace,)


@pytest.mark.parametrize("question", [
    "Did the v2.3.1 deploy roll back?",  # a version
    "Which deploys shipped 1.15.1-rc2 yesterday?",
    "What broke after commit 9f3ac2d1 was merged?",  # a hash in text, not stored
    "Was there an anomaly at 10:30?",  # a time
    "What happened between 14:00 and 15:00 today?",
    "Any 5xx spikes on api-gateway?",  # a number with a unit
    "Why did the p99 latency double?",
    "What deploys went out on 2026-11-20?",  # a date
    "Did the checkout-2024 service roll back?",  # a stored service written like an id
    "Why did utf-8 decoding fail?",
])
def test_look_alikes_that_are_not_stored_are_not_trace_ids(question: str) -> None:
    assert ask(question).filters.trace_id == ()


def test_a_hash_in_text_is_a_trace_when_it_is_stored() -> None:
    assert ask("What broke after commit 9f3ac2d1 was merged?", (*STORED, "9f3ac2d1")).filters.trace_id == (
        "9f3ac2d1",
    )


def test_candidates_are_the_id_like_tokens_in_three_cases_and_bounded() -> None:
    candidates = trace_candidates("timeline of INC-2041 and t-81, not deploy; v2.3.1")
    assert {"INC-2041", "inc-2041", "t-81", "T-81", "v2.3.1"} <= set(candidates)
    assert "deploy" not in candidates and "timeline" not in candidates  # plain words are not looked up
    many = trace_candidates(" ".join(f"t-{i}" for i in range(1000)))
    assert len(many) <= 96


def test_several_traces_in_one_question() -> None:
    assert ask("Compare t-81 and INC-2041").filters.trace_id == ("t-81", "INC-2041")
