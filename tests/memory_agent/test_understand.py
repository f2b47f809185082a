"""Question understanding by rules: intent, window, text, filters and the notes that explain them."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_agent.query.text import STOPWORDS, stem, tokenize
from memory_agent.query.understand import understand
from memory_agent.types import Filters, TimeWindow, Understanding, Vocabulary
from tests.conftest import NOW_DT as NOW  # Saturday 2026-11-21 10:00 UTC

UTC_ZONE = ZoneInfo("UTC")

VOCAB = Vocabulary(
    events=frozenset(
        {"rollback", "test_quarantined", "flaky_test", "anomaly", "deploy", "root_cause", "alert"}
    ),
    services=frozenset({"api-gateway", "billing_service", "auth"}),
    handles=frozenset({"@deploy", "@monitor", "@test-runner", "@alice"}),
)


def ask(question: str, vocabulary: Vocabulary = VOCAB) -> Understanding:
    return understand(question, now=NOW, tz=UTC_ZONE, vocabulary=vocabulary)


# --- text normalisation --------------------------------------------------------------------------------


def test_tokenize_splits_like_fts5_unicode61() -> None:
    assert tokenize("@test-runner's api_gateway NEAR(x*) Ünïcode 81") == [
        "test", "runner", "s", "api", "gateway", "near", "x", "ünïcode", "81",
    ]  # fmt: skip
    assert tokenize('"AND OR NEAR( * ^"') == ["and", "or", "near"]
    assert {"the", "what", "did", "how", "many"} <= STOPWORDS


@pytest.mark.parametrize(
    "words",
    [
        ("rolled", "rolling", "roll"),
        ("rollbacks", "rollback"),
        ("deploys", "deployed", "deploying", "deployment", "deployments", "deploy"),
        ("quarantined", "quarantine", "quarantines"),
        ("anomalies", "anomaly"),
        ("causes", "caused", "cause"),
        ("tests", "test", "testing"),
        ("flaky", "flakiness"),
    ],
)
def test_stem_joins_inflections(words: tuple[str, ...]) -> None:
    assert len({stem(w) for w in words}) == 1


def test_stem_leaves_odd_input_alone() -> None:
    assert stem("t81") == "t81"
    assert stem("y" * 100) == "y" * 100
    assert stem("") == ""
    assert stem("ab") == "ab"


# --- window and text -----------------------------------------------------------------------------------


def test_window_is_removed_from_text_and_noted() -> None:
    u = ask("What rollbacks happened in the last 7 days?")
    assert u.window == TimeWindow(since=NOW.timestamp() - 7 * 86400, until=None)
    assert u.window_phrase == "in the last 7 days"
    assert u.text == "What rollbacks happened?"
    assert any(n.startswith("window='in the last 7 days'") for n in u.notes)


def test_no_window() -> None:
    u = ask("Why did   production roll back ?")
    assert u.window is None and u.window_phrase is None
    assert u.text == "Why did production roll back?"


def test_impossible_date_is_noted() -> None:
    u = ask("What happened on 2026-02-30?")
    assert u.window is None
    assert any("2026-02-30" in n and "no such date" in n for n in u.notes)


# --- intent --------------------------------------------------------------------------------------------

INTENTS = [
    ("How many flaky tests did @test-runner report this week?", "count"),
    ("number of rollbacks yesterday", "count"),
    ("count rollbacks", "count"),
    ("How often did api-gateway roll back?", "count"),
    ("Give me the timeline of trace t-81", "timeline"),
    ("what happened in trace t-81", "timeline"),
    ("What happened with trace 3f1c2a9e-1b2c-4d5e-8f90-123456789abc?", "timeline"),
    ("history of incident 42", "timeline"),
    ("sequence of events for t-81", "timeline"),
    ("show me the timeline of t-81", "timeline"),
    ("Why did production roll back on Friday?", "why"),
    ("what caused the anomalies?", "why"),
    ("root cause of the outage", "why"),
    ("reason for the rollback", "why"),
    ("What was the root cause of the rollback?", "why"),
    ("What rollbacks happened in the last 7 days?", "list"),
    ("what deploys occurred today", "list"),
    ("list all rollbacks", "list"),
    ("List root causes this month", "list"),
    ("which services rolled back?", "list"),
    ("show me all anomalies", "list"),
    ("show anomalies", "list"),
    ("any rollbacks in the last hour?", "list"),
    ("were there any flaky tests", "list"),
    ("What did @monitor report?", "list"),
    ("What happened yesterday?", "list"),
    ("tell me about rollbacks", "search"),
    ("api-gateway latency", "search"),
    ("", "search"),
]


@pytest.mark.parametrize(("question", "intent"), INTENTS)
def test_intent_table(question: str, intent: str) -> None:
    u = ask(question)
    assert u.intent == intent
    assert any(n.startswith(f"intent={intent}") for n in u.notes)


# --- filters -------------------------------------------------------------------------------------------

E, S, H, T = "event", "service", "from_handle", "trace_id"

FILTERS: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    # event types, as people speak of them
    ("What rollbacks happened in the last 7 days?", {E: ("rollback",)}),
    ("Why did production roll back on Friday?", {E: ("rollback",)}),
    ("which services rolled back", {E: ("rollback",)}),
    ("how many roll backs", {E: ("rollback",)}),
    ("count roll-backs", {E: ("rollback",)}),
    ("list quarantined tests", {E: ("test_quarantined",)}),
    ("were any tests quarantined today", {E: ("test_quarantined",)}),
    ("were tests being quarantined", {E: ("test_quarantined",)}),
    ("How many flaky tests this week", {E: ("flaky_test",)}),
    ("any anomalies?", {E: ("anomaly",)}),
    ("how many deployments last week", {E: ("deploy",)}),
    ("what was deployed today", {E: ("deploy",)}),
    ("list root causes", {E: ("root_cause",)}),
    ("list rollbacks and anomalies", {E: ("rollback", "anomaly")}),
    # services named as the thing
    ("api-gateway rollbacks", {E: ("rollback",), S: ("api-gateway",)}),
    ("rollbacks of api gateway", {E: ("rollback",), S: ("api-gateway",)}),
    ("anomalies in billing_service", {E: ("anomaly",), S: ("billing_service",)}),
    ("what happened to the billing service", {S: ("billing_service",)}),
    # handles as reporters
    ("What did @monitor report?", {H: ("@monitor",)}),
    ("anomalies reported by monitor", {E: ("anomaly",), H: ("@monitor",)}),
    ("rollbacks from test-runner", {E: ("rollback",), H: ("@test-runner",)}),
    ("flaky tests from the test runner", {E: ("flaky_test",), H: ("@test-runner",)}),
    ("How many flaky tests did @test-runner report this week?", {E: ("flaky_test",), H: ("@test-runner",)}),
    ("what did monitor say", {H: ("@monitor",)}),
    ("monitor's anomalies", {E: ("anomaly",), H: ("@monitor",)}),
    # traces always narrow
    ("Give me the timeline of trace t-81", {T: ("t-81",)}),
    ("trace_id t-81", {T: ("t-81",)}),
    ("trace id: abc-17 please", {T: ("abc-17",)}),
    ("what about t-81?", {T: ("t-81",)}),
    (
        "what happened with 3F1C2A9E-1B2C-4D5E-8F90-123456789ABC",
        {T: ("3f1c2a9e-1b2c-4d5e-8f90-123456789abc",)},
    ),
    ("why did trace t-9 roll back", {E: ("rollback",), T: ("t-9",)}),
]


@pytest.mark.parametrize(("question", "expected"), FILTERS)
def test_filter_table(question: str, expected: dict[str, tuple[str, ...]]) -> None:
    assert ask(question).filters == Filters(**expected)


MENTIONED_ONLY: list[tuple[str, dict[str, tuple[str, ...]], str]] = [
    # question, filters expected, a note that must explain the rest
    ("Why did the rollback happen after alice's deploy?", {E: ("rollback",)}, "handle @alice"),
    ("Why did the rollback happen after alice's deploy?", {E: ("rollback",)}, "event deploy"),
    ("What did monitor say about the deploy?", {H: ("@monitor",)}, "event deploy"),
    ("rollbacks after the api-gateway deploy", {E: ("rollback",)}, "service api-gateway"),
    ("anomalies since the deploy", {E: ("anomaly",)}, "event deploy"),
    ("rollbacks caused by the deploy agent", {E: ("rollback",)}, "handle @deploy"),
    ("did alice approve the rollback", {E: ("rollback",)}, "handle @alice"),
    ("timeline of the rollback in trace t-81", {T: ("t-81",)}, "event rollback"),
]


@pytest.mark.parametrize(("question", "expected", "note"), MENTIONED_ONLY)
def test_names_merely_mentioned_do_not_filter(
    question: str, expected: dict[str, tuple[str, ...]], note: str
) -> None:
    u = ask(question)
    assert u.filters == Filters(**expected)
    assert any(n.startswith(note) and "not a filter" in n for n in u.notes), u.notes


COLLISIONS: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    # handle @deploy and event deploy share a name
    ("how many deploys today", {E: ("deploy",)}),
    ("@deploy's rollbacks", {E: ("rollback",), H: ("@deploy",)}),
    ("rollbacks from deploy", {E: ("rollback",), H: ("@deploy",)}),
    ("what did the deploy agent do today", {H: ("@deploy",)}),
    ("How many deploys did deploy report?", {E: ("deploy",), H: ("@deploy",)}),
    ("deploys reported by @deploy", {E: ("deploy",), H: ("@deploy",)}),
]


@pytest.mark.parametrize(("question", "expected"), COLLISIONS)
def test_handle_and_event_with_the_same_name(question: str, expected: dict[str, tuple[str, ...]]) -> None:
    u = ask(question)
    assert u.filters == Filters(**expected)
    assert any("read as" in n for n in u.notes), u.notes


def test_collision_notes_say_which_reading_won() -> None:
    assert "'deploys' read as event, not handle @deploy" in ask("how many deploys today").notes
    assert "'@deploy' read as handle @deploy, not event deploy" in ask("@deploy's rollbacks").notes


def test_plain_deploy_handle_without_event_is_only_mentioned() -> None:
    vocab = Vocabulary(events=frozenset({"rollback"}), handles=frozenset({"deploy"}))
    u = ask("Why did the rollback happen after the deploy?", vocab)
    assert u.filters == Filters(event=("rollback",))
    assert any(n.startswith("handle deploy") and "not a filter" in n for n in u.notes)


def test_both_deploy_and_deployment_stored() -> None:
    vocab = Vocabulary(events=frozenset({"deploy", "deployment"}))
    assert set(ask("list deploys", vocab).filters.event) == {"deploy", "deployment"}


def test_service_and_event_compete_longest_wins() -> None:
    vocab = Vocabulary(events=frozenset({"deploy"}), services=frozenset({"deploy-service"}))
    u = ask("rollbacks of deploy service", vocab)
    assert u.filters == Filters(service=("deploy-service",))


def test_unknown_names_do_not_filter() -> None:
    u = ask("How many explosions at the warehouse?")
    assert u.filters.is_empty()
    assert u.intent == "count"


def test_notes_record_each_decision() -> None:
    u = ask("How many flaky tests did @test-runner report this week?")
    assert u.notes[0].startswith("window='this week'")
    assert "intent=count from 'How many'" in u.notes
    assert "handle=@test-runner from '@test-runner' (report)" in u.notes
    assert "event=flaky_test from 'flaky tests'" in u.notes
    assert ask("Why did production roll back?").notes[-1] == "event=rollback from 'roll back'"


def test_empty_vocabulary_still_finds_traces_and_intent() -> None:
    u = ask("Give me the timeline of trace t-81 since Monday", Vocabulary())
    assert u.intent == "timeline"
    assert u.filters == Filters(trace_id=("t-81",))
    assert u.text == "Give me the timeline of trace t-81"


# --- never raises, stays linear ------------------------------------------------------------------------

NOISE = st.sampled_from(
    ['"AND OR NEAR( * ^"', "NEAR(", "*", "^", '"', "'s", "@", "@deploy", " deploy ", "trace ", "t-81",
     "rolled back", "tests quarantined", "after ", "about ", "by ", "from ", "how many ", "why ", "last 7 days",
     "on 2026-02-30", "between monday and", "\u2019s", "-", "_", "\u0130", "\x00", "api gateway", " agent"]
)  # fmt: skip

NAMES = st.frozensets(
    st.one_of(st.text(max_size=12), st.sampled_from(["deploy", "@deploy", "", "@", "-", "a_b"]))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.one_of(NOISE, st.text(max_size=15)), max_size=30),
    events=NAMES,
    services=NAMES,
    handles=NAMES,
)
def test_understand_never_raises(
    parts: list[str], events: frozenset[str], services: frozenset[str], handles: frozenset[str]
) -> None:
    question = "".join(parts)
    vocab = Vocabulary(events=events, services=services, handles=handles)
    u = understand(question, now=NOW, tz=ZoneInfo("Europe/Berlin"), vocabulary=vocab)
    assert u.intent in ("list", "count", "timeline", "why", "search")
    assert set(u.filters.event) <= events
    assert set(u.filters.service) <= services
    assert set(u.filters.from_handle) <= handles


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(st.one_of(NOISE, st.text(max_size=10)), min_size=1, max_size=10))
def test_understand_on_100kb_strings(parts: list[str]) -> None:
    chunk = "".join(parts) or "x"
    question = (chunk * (100_000 // len(chunk) + 1))[:100_000]
    u = ask(question)
    assert len(u.notes) <= 40


@pytest.mark.parametrize(
    "chunk",
    ["t-81 ", "trace 1 ", "rollbacks after rollbacks by monitor ", "@deploy ", "api gateway ", " ", "a's ",
     '"AND OR NEAR( * ^"', "tests were quarantined ", "what ", "the Kafka broker. Dr. Seuss ", "GraphQL " ],
)  # fmt: skip
def test_adversarial_100kb_questions(chunk: str) -> None:
    question = chunk * (100_000 // len(chunk))
    u = ask(question)
    assert len(u.filters.trace_id) <= 32
    assert len(u.notes) <= 40


@pytest.mark.parametrize("question", ["before 0001-01-01", "in 9999", "after 9999-12-31", "since 0001-01-01"])
def test_dates_at_the_edge_of_the_calendar(question: str) -> None:
    u = understand(question, now=NOW, tz=ZoneInfo("Europe/Berlin"), vocabulary=VOCAB)
    assert u.window is None
    assert any("no such date" in n for n in u.notes)
