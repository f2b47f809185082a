"""The wire contract: how payloads are classified and reports validated (pure, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_agent.errors import QueryError, ReportError
from memory_agent.types import Filters, InsertResult
from memory_agent.wire import (
    Operation,
    Question,
    Report,
    build_event,
    classify,
    error_reply,
    indexed_text,
    iso_utc,
    stored_reply,
)

UTC_TZ = ZoneInfo("UTC")
SENT = datetime(2026, 11, 20, 14, 2, tzinfo=UTC).timestamp()


def make(payload: dict, **kw):  # type: ignore[no-untyped-def]
    args = dict(message_id="m1", session="s1", from_handle="deploy", trace_id="env-trace",
                sent_at=SENT, received_at=SENT + 1, tz=UTC_TZ)
    args.update(kw)
    return build_event(Report(payload), **args)


def test_json_object_is_a_report_whatever_the_content_type() -> None:
    body = json.dumps({"event": "rollback", "service": "api-gateway"})
    assert classify(body, "application/json", tz=UTC_TZ) == Report({"event": "rollback", "service": "api-gateway"})
    assert isinstance(classify(body, "text/plain", tz=UTC_TZ), Report)


def test_plain_text_is_a_question() -> None:
    q = classify("What rollbacks happened in the last 7 days?", "text/plain", tz=UTC_TZ)
    assert q == Question(text="What rollbacks happened in the last 7 days?")


def test_structured_question_reads_every_field() -> None:
    body = json.dumps({
        "query": "rollbacks?", "limit": 5, "since": "2026-11-01T00:00:00Z", "until": 1_800_000_000,
        "filters": {"event": "Rollback", "service": ["api", "db"], "trace_id": "t-81"},
    })
    q = classify(body, "application/json", tz=UTC_TZ)
    assert isinstance(q, Question) and q.structured
    assert q.limit == 5
    assert q.since == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert q.until == 1_800_000_000
    assert q.filters == Filters(event=("rollback",), service=("api", "db"), trace_id=("t-81",))


def test_structured_question_as_of_and_mode() -> None:
    q = classify(json.dumps({"query": "what happened last year?", "as_of": "2023-10-20T18:00:00", "mode": "search"}),
                 "application/json", tz=ZoneInfo("Europe/Berlin"))
    assert isinstance(q, Question)
    assert q.as_of == datetime(2023, 10, 20, 16, 0, tzinfo=UTC).timestamp()  # naive: in the configured zone
    assert q.mode == "search"
    default = classify('{"query": "q"}', "application/json", tz=UTC_TZ)
    assert isinstance(default, Question) and default.as_of is None and default.mode == "auto"
    assert classify('{"query": "q", "as_of": 1700000000}', "", tz=UTC_TZ) == Question(
        text="q", structured=True, as_of=1_700_000_000.0
    )


def test_op_is_an_operation() -> None:
    assert classify('{"op": "stats"}', "application/json", tz=UTC_TZ) == Operation("stats", {})


@pytest.mark.parametrize(
    ("payload", "content_type", "error", "says"),
    [
        ("{not json", "application/json", ReportError, "not valid JSON"),
        ("[1, 2]", "application/json", ReportError, "not an object"),
        ('"text"', "application/json", ReportError, "not an object"),
        ('{"a": NaN}', "application/json", ReportError, "NaN"),
        ("[" * 100_000 + "]" * 100_000, "application/json", ReportError, "nested too deeply"),
        ("   ", "text/plain", QueryError, "empty"),
        ("x" * 20_000, "text/plain", QueryError, "characters long"),
        ('{"query": ""}', "application/json", QueryError, "non-empty string"),
        ('{"query": "q", "limit": 0}', "application/json", QueryError, "limit"),
        ('{"query": "q", "limit": true}', "application/json", QueryError, "limit"),
        ('{"query": "q", "since": "yesterday-ish"}', "application/json", QueryError, "ISO-8601"),
        ('{"query": "q", "since": "2026-11-03", "until": "2026-11-01"}', "application/json", QueryError, "earlier"),
        ('{"query": "q", "filters": {"colour": "red"}}', "application/json", QueryError, "unknown filter"),
        ('{"query": "q", "as_of": "last tuesday"}', "application/json", QueryError, "as_of"),
        ('{"query": "q", "as_of": 1700000000000}', "application/json", QueryError, "milliseconds"),
        ('{"query": "q", "mode": "list"}', "application/json", QueryError, '"mode" must be "auto"'),
        ('{"query": "q", "mode": ["search"]}', "application/json", QueryError, "mode"),
        ('{"query": "q", "filters": {"event": 3}}', "application/json", QueryError, "string"),
        ('{"op": 7}', "application/json", ReportError, "op"),
    ],
)
def test_bad_payloads_get_errors_that_say_what_to_fix(payload: str, content_type: str, error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        classify(payload, content_type, tz=UTC_TZ)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (json.dumps({"query": "q", "limit": "9" * 600_000}), "limit"),
        (json.dumps({"query": "q", "mode": "m" * 600_000}), "mode"),
        (json.dumps({"query": "q", "since": "s" * 600_000}), None),
        (json.dumps({"query": "q", "filters": {"k" * 600_000: "x"}}), "filters"),
        (json.dumps({"event": "probe", "occurred_at": "9" * 600_000}), None),
    ],
)
def test_error_texts_quote_at_most_an_excerpt_of_the_input(payload: str, field: str | None) -> None:
    with pytest.raises((QueryError, ReportError)) as caught:
        request = classify(payload, "application/json", tz=UTC_TZ)
        make(request.payload)  # type: ignore[union-attr]  # a report: its time is read when it is built
    assert len(str(caught.value)) < 400
    if field is not None:
        assert caught.value.field == field  # type: ignore[union-attr]


def test_report_event_is_lower_case_and_fields_kept() -> None:
    e = make({"event": "  RollBack ", "service": "api-gateway", "reason": "error spike", "extra": {"a": 1}})
    assert e.event == "rollback"
    assert e.service == "api-gateway"
    assert e.payload["extra"] == {"a": 1}
    assert e.occurred_at == SENT  # no occurred_at: the envelope's send time
    assert e.trace_id == "env-trace"
    assert e.from_handle == "deploy" and e.message_id == "m1" and e.received_at == SENT + 1


def test_payload_trace_id_wins() -> None:
    assert make({"event": "rollback", "trace_id": "t-81"}).trace_id == "t-81"
    assert make({"event": "rollback", "trace_id": 81}).trace_id == "81"


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2026-11-20T14:02:00Z", datetime(2026, 11, 20, 14, 2, tzinfo=UTC)),
        ("2026-11-20T15:02:00+01:00", datetime(2026, 11, 20, 14, 2, tzinfo=UTC)),
        ("2026-11-20T14:02:00", datetime(2026, 11, 20, 14, 2, tzinfo=UTC)),  # naive: configured zone (UTC)
        (1_795_615_320, datetime.fromtimestamp(1_795_615_320, tz=UTC)),
        (1_795_615_320.5, datetime.fromtimestamp(1_795_615_320.5, tz=UTC)),
    ],
)
def test_occurred_at_forms(occurred_at: object, expected: datetime) -> None:
    assert make({"event": "x", "occurred_at": occurred_at}).occurred_at == expected.timestamp()


def test_naive_occurred_at_is_read_in_the_configured_zone() -> None:
    e = make({"event": "x", "occurred_at": "2026-11-20T15:02:00"}, tz=ZoneInfo("Europe/Berlin"))
    assert e.occurred_at == datetime(2026, 11, 20, 14, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"service": "api"}, '"event" string'),
        ({"event": ""}, '"event" string'),
        ({"event": 5}, '"event" string'),
        ({"event": "x" * 500}, "at most"),
        ({"event": "x", "trace_id": ""}, "trace_id"),
        ({"event": "x", "trace_id": ["a"]}, "trace_id"),
        ({"event": "x", "occurred_at": "2026-02-30T00:00:00Z"}, "ISO-8601"),
        ({"event": "x", "occurred_at": "friday"}, "ISO-8601"),
        ({"event": "x", "occurred_at": True}, "ISO-8601"),
        ({"event": "x", "occurred_at": [1]}, "ISO-8601"),
        ({"event": "x", "occurred_at": -5}, "1970..2200"),
        ({"event": "x", "occurred_at": 1_795_615_320_000}, "milliseconds"),
        ({"event": "x", "occurred_at": 1e300}, "1970..2200"),
        ({"event": "x", "occurred_at": 10**400}, "1970..2200"),
        ({"event": "x", "occurred_at": "99999-01-01"}, "ISO-8601"),
    ],
)
def test_unusable_reports_are_refused(payload: dict, says: str) -> None:
    with pytest.raises(ReportError, match=says):
        make(payload)


def test_indexed_text_leads_with_the_story_and_spells_event_names_as_words() -> None:
    text = indexed_text("test_quarantined", {"event": "test_quarantined", "test": "test_login", "reason": "flaky 3/10",
                                             "trace_id": "t-1"})
    assert text.startswith("test quarantined. flaky 3/10. test: test_login")
    assert "t-1" not in text


def test_replies() -> None:
    assert json.loads(stored_reply(InsertResult(7, True))) == {"status": "stored", "id": 7, "duplicate": True}
    assert json.loads(error_reply("bad")) == {"status": "error", "error": "bad"}
    assert iso_utc(0) == "1970-01-01T00:00:00Z"


@given(st.text(max_size=300), st.sampled_from(["text/plain", "application/json", "x/unknown", ""]))
def test_classify_never_fails_except_with_its_own_errors(payload: str, content_type: str) -> None:
    try:
        result = classify(payload, content_type, tz=UTC_TZ)
    except (ReportError, QueryError) as exc:
        assert str(exc)
    else:
        assert isinstance(result, (Report, Question, Operation))


@given(st.dictionaries(st.text(max_size=10), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10)))
def test_build_event_either_stores_as_sent_or_refuses(payload: dict) -> None:
    try:
        e = make(payload)
    except ReportError as exc:
        assert str(exc)
    else:
        assert e.payload == payload
        assert e.event == " ".join(payload["event"].split()).lower()
