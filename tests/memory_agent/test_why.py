"""Which incident a why question is about (pure: memory_agent.query.why)."""

from __future__ import annotations

from typing import Any

from memory_agent.query.why import choose_incident, equal_matches, is_cause, is_symptom
from memory_agent.types import StoredEvent

_ids = iter(range(1, 10_000))


def ev(event: str, trace: str, at: float, *, text: str = "", **payload: Any) -> StoredEvent:
    i = next(_ids)
    return StoredEvent(message_id=f"m{i}", session=f"s{i}", from_handle="deploy", trace_id=trace, event=event,
                       service=None, occurred_at=at, received_at=at, payload={"event": event, **payload},
                       text=text or event, id=i)


def test_cause_and_symptom_are_read_from_event_words_and_fields() -> None:
    assert is_cause(ev("root_cause", "t", 0)) and is_cause(ev("rca_published", "t", 0))
    assert is_cause(ev("note", "t", 0, root_cause="pool too small"))
    assert not is_cause(ev("rollback", "t", 0, reason="error spike"))
    assert is_symptom(ev("anomaly", "t", 0)) and is_symptom(ev("incident_opened", "t", 0))
    assert is_symptom(ev("error_spike", "t", 0)) and not is_symptom(ev("deploy", "t", 0))


def test_the_rollback_whose_trace_holds_its_cause_wins_over_a_more_recent_one() -> None:
    old = ev("rollback", "t-1", 100)
    explained_cause = ev("root_cause", "t-1", 150)
    recent = ev("rollback", "t-2", 500)
    traces = {"t-1": [old, explained_cause], "t-2": [recent]}
    choice = choose_incident([recent, old], traces)
    assert choice is not None
    assert choice.chosen == old and choice.explained_by == (explained_cause,)
    assert choice.others == (recent,)
    assert "cause" in choice.reason


def test_an_anomaly_before_it_counts_one_after_it_does_not() -> None:
    a = ev("rollback", "t-a", 200)
    before = ev("anomaly", "t-a", 190)
    b = ev("rollback", "t-b", 300)
    after = ev("anomaly", "t-b", 310)  # after the rollback: not what caused it
    choice = choose_incident([a, b], {"t-a": [before, a], "t-b": [b, after]})
    assert choice is not None and choice.chosen == a and choice.explained_by == (before,)


def test_a_cause_beats_an_anomaly_and_recency_breaks_ties() -> None:
    with_anomaly = ev("rollback", "t-x", 900)
    anomaly = ev("anomaly", "t-x", 890)
    with_cause = ev("rollback", "t-y", 100)
    cause = ev("root_cause", "t-y", 400)  # reported later: still explains it
    plain_old, plain_new = ev("rollback", "t-p", 50), ev("rollback", "t-q", 60)
    traces = {"t-x": [anomaly, with_anomaly], "t-y": [with_cause, cause], "t-p": [plain_old], "t-q": [plain_new]}
    choice = choose_incident([plain_old, with_anomaly, plain_new, with_cause], traces)
    assert choice is not None
    assert choice.chosen == with_cause
    assert choice.others == (with_anomaly, plain_new, plain_old)
    only_plain = choose_incident([plain_old, plain_new], traces)
    assert only_plain is not None and only_plain.chosen == plain_new and only_plain.reason == "the most recent match"


def test_one_or_no_candidate() -> None:
    lone = ev("rollback", "t-l", 1)
    choice = choose_incident([lone], {"t-l": [lone]})
    assert choice is not None and choice.chosen == lone and choice.reason == "the only match" and choice.others == ()
    assert choose_incident([], {}) is None


def test_equal_matches_are_the_events_holding_most_of_the_questions_other_words() -> None:
    # "Why did production roll back?" over rollbacks ranked by a score that prefers one wording.
    worded = ev("rollback", "t-1", 100, text="rollback. reverted the build. env: production")
    staging = ev("rollback", "t-2", 200, text="rollback. env: staging. production traffic unaffected")
    other = ev("rollback", "t-3", 300, text="rollback. back to the previous build. env: production. service: payments")
    dev = ev("rollback", "t-4", 400, text="rollback. env: dev")
    ranked = [worded, dev, staging, other]
    # Every event holding "production" matches equally, however far down the ranking put it.
    assert equal_matches(ranked, ["production"]) == [worded, staging, other]
    # Holding more of the words is a better match (coordination level), by stem ("productions").
    assert equal_matches(ranked, ["productions", "payments"]) == [other]
    # Words no event holds: the question is worded otherwise, so the best-ranked event alone.
    assert equal_matches(ranked, ["wobbly"]) == [worded]
    # No other words: the kind of event alone was asked for, so every event matches equally.
    assert equal_matches(ranked, []) == ranked
    assert equal_matches([], ["production"]) == []
