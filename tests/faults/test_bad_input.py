"""Bad input to the real daemon process (``memory-agent run``, real MiniLM) over a real nats-server.

Nothing crashes, nothing is stored wrongly, every sender gets a clear error: each report is either
stored exactly as it was sent (the row's payload, read back from SQLite, equals what was sent) or
answered ``{"status": "error", "error": ...}`` with nothing stored; each question gets an answer or an
error; bytes that are not an envelope are terminated and logged, and the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import Message, PayloadTooLarge, SyncAgent
from mesh.constants import STREAM_NAME
from mesh.envelope import Envelope, encode_envelope
from mesh.handles import inbox_subject
from mesh.server import NatsServer
from tests.faults.harness import COUNTS, DaemonProcess, embedded_count

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(600)]

FUZZ = settings(max_examples=COUNTS.fuzz_examples, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Memory:
    url: str
    data: Path
    daemon: DaemonProcess
    agent: SyncAgent

    @property
    def db(self) -> Path:
        return self.data / "memory.sqlite3"

    def send(self, payload: str, content_type: str = "application/json", timeout: float = 60) -> Message:
        return self.agent.request("memory", payload, content_type=content_type, timeout=timeout)

    def rows_of(self, session: str) -> list[tuple[str, str]]:
        """(event, payload) of the rows stored for ``session`` (a WAL reader beside the daemon)."""
        with sqlite3.connect(self.db, timeout=10) as conn:
            return conn.execute("SELECT event, payload FROM events WHERE session = ?", (session,)).fetchall()

    def count(self) -> int:
        with sqlite3.connect(self.db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.send(json.dumps({"op": "stats"})).payload))


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Memory]:
    root = tmp_path_factory.mktemp("bad-input")
    server = NatsServer(store_dir=root / "nats").start()
    daemon = DaemonProcess(root / "data", server.url)
    agent = SyncAgent(f"fuzzer-{uuid.uuid4().hex[:6]}", servers=server.url)
    try:
        daemon.start()
        agent.start()
        agent.register()
        yield Memory(server.url, root / "data", daemon, agent)
        agent.close()
        assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()
    finally:
        agent.close()
        daemon.kill()
        server.stop()


def canonical(obj: Any) -> str:
    """Exact JSON text (types and key order kept: 1 and 1.0, or -0.0 and 0.0, differ)."""
    return json.dumps(obj)


def check_report(memory: Memory, text: str, content_type: str, sent: Any) -> dict[str, Any]:
    """Send a report; it must come back stored exactly as ``sent``, or as an error with nothing stored."""
    reply = memory.send(text, content_type)
    answer = json.loads(reply.payload)
    rows = memory.rows_of(reply.session)
    if answer.get("status") == "stored":
        assert len(rows) == 1, rows
        assert canonical(json.loads(rows[0][1])) == canonical(sent)
    else:
        assert answer["status"] == "error" and answer["error"].strip(), answer
        assert rows == [], "an error reply, yet something was stored"
    return dict(answer)


def check_question(memory: Memory, text: str, content_type: str) -> Message:
    """Send a question; it must get an answer or an error (JSON ``status: error``), never silence."""
    reply = memory.send(text, content_type)
    assert memory.rows_of(reply.session) == []
    if reply.payload.lstrip().startswith("{"):
        answer = json.loads(reply.payload)
        assert ("answer" in answer and "events" in answer) or (
            answer.get("status") == "error" and answer["error"].strip()), answer
    else:
        assert reply.content_type == "text/plain" and reply.payload.strip()
    return reply


def memory_inbox(sender: str) -> str:
    """The subject a message from ``sender`` to @memory is published on (``mesh.inbox.memory[.<sender>]``)."""
    if len(inspect.signature(inbox_subject).parameters) == 2:
        return inbox_subject("memory", sender)  # type: ignore[call-arg]
    return inbox_subject("memory")  # type: ignore[call-arg]


def publish_raw(url: str, subject: str, data: bytes) -> None:
    """Publish bytes straight into JetStream, bypassing the SDK (and its envelope codec)."""

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        finally:
            await nc.close()

    asyncio.run(go())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# --- reports, named ------------------------------------------------------------------------------------

DEEP = 100_000
STORED = "stored"

# (id, payload text, content type, expected status, what the error must mention)
NAMED_REPORTS: list[tuple[str, str, str, str, str]] = [
    ("invalid-json", '{"event": "rollback", "service": ', "application/json", "error", "not valid JSON"),
    ("invalid-json-sent-as-text", '{"event": "rollback", "service": ', "text/plain", "error", "not valid JSON"),
    ("json-array", '[{"event": "rollback"}]', "application/json", "error", "not an object"),
    ("json-string", '"rollback"', "application/json", "error", "not an object"),
    ("json-number", "42", "application/json", "error", "not an object"),
    ("json-null", "null", "application/json", "error", "not an object"),
    ("nan", '{"event": "probe", "value": NaN}', "application/json", "error", "NaN"),
    ("nan-sent-as-text", '{"event": "probe", "value": NaN}', "text/plain", "error", "NaN"),
    ("infinity", '{"event": "probe", "value": Infinity}', "application/json", "error", "Infinity"),
    ("minus-infinity", '{"event": "probe", "value": -Infinity}', "text/plain", "error", "Infinity"),
    ("float-overflow-1e400", '{"event": "probe", "value": 1e400}', "application/json", "error", "64-bit float"),
    ("integer-of-5000-digits", '{"event": "probe", "value": 1' + "0" * 5000 + "}", "application/json",
     "error", "digits"),
    ("nesting-100000-deep", '{"event": "probe", "v": ' + "[" * DEEP + "]" * DEEP + "}", "application/json",
     "error", "nested too deeply"),
    ("nesting-50-deep", json.dumps({"event": "probe", "v": json.loads("[" * 50 + "1" + "]" * 50)}),
     "application/json", STORED, ""),
    ("string-of-500kB", json.dumps({"event": "log_dump", "text": "lorem ipsum " * 42_000}), "application/json",
     STORED, ""),
    ("key-of-100kB", json.dumps({"event": "probe", "k" * 100_000: 1}), "application/json", STORED, ""),
    ("event-name-of-10kB", json.dumps({"event": "e" * 10_000}), "application/json", "error", "characters"),
    ("event-missing", json.dumps({"service": "api"}), "application/json", "error", '"event"'),
    ("event-not-a-string", json.dumps({"event": 5}), "application/json", "error", '"event"'),
    ("event-blank", json.dumps({"event": " \t "}), "application/json", "error", '"event"'),
    ("trace-id-a-list", json.dumps({"event": "probe", "trace_id": ["t"]}), "application/json", "error",
     "trace_id"),
    ("nul-characters", json.dumps({"event": "nul\u0000probe", "v": "a\u0000b"}), "application/json", STORED, ""),
    ("lone-surrogate-escape", '{"event": "probe", "v": "\\ud800"}', "application/json", "error", "surrogate"),
    ("lone-surrogate-in-a-key", '{"event": "probe", "\\udfff": 1}', "application/json", "error", "surrogate"),
    ("surrogate-pair-escape", '{"event": "probe", "v": "\\ud83d\\ude00"}', "application/json", STORED, ""),
    ("sql-looking-strings", json.dumps({"event": "x'); DROP TABLE events;--", "service": "' OR 1=1 --",
                                        "trace_id": "t' OR '1'='1", "note": "\"; DELETE FROM events; --"}),
     "application/json", STORED, ""),
    ("fts5-syntax-in-a-report", json.dumps({"event": "probe", "summary": 'AND OR NEAR( * ^ "'}),
     "application/json", STORED, ""),
    ("content-type-unknown", json.dumps({"event": "probe"}), "application/x-unknown", STORED, ""),
    ("content-type-empty", json.dumps({"event": "probe"}), "", STORED, ""),
    ("content-type-image", json.dumps({"event": "probe"}), "image/png", STORED, ""),
    ("content-type-json-with-charset", json.dumps({"event": "probe"}), "text/json; charset=utf-8", STORED, ""),
    ("content-type-vendor-json", json.dumps({"event": "probe"}), "application/vnd.mesh+json", STORED, ""),
    ("unknown-op", json.dumps({"op": "drop_everything"}), "application/json", "error", "unknown op"),
    ("op-not-a-string", json.dumps({"op": 7}), "application/json", "error", '"op"'),
]

# occurred_at values: wrong types and impossible dates.
BAD_TIMES: list[tuple[str, Any, str]] = [
    ("list", [], "ISO-8601"),
    ("object", {"at": 1}, "ISO-8601"),
    ("bool", True, "ISO-8601"),
    ("words", "yesterday at noon", "ISO-8601"),
    ("empty-string", "", "ISO-8601"),
    ("february-30", "2026-02-30T10:00:00Z", "ISO-8601"),
    ("month-13", "2026-13-01", "ISO-8601"),
    ("hour-25", "2026-11-21T25:00:00Z", "ISO-8601"),
    ("offset-of-25h", "2026-11-21T10:00:00+25:00", "ISO-8601"),
    ("year-9999", "9999-12-31T23:59:59Z", "1970..2200"),
    ("year-1", "0001-01-01T00:00:00Z", "1970..2200"),
    ("negative-seconds", -1, "1970..2200"),
    ("milliseconds", 1_763_719_200_000, "milliseconds"),
    ("1e20-seconds", 1e20, "1970..2200"),
    ("10**400-seconds", 10**400, "1970..2200"),
]


@pytest.mark.parametrize(("text", "content_type", "status", "says"),
                         [case[1:] for case in NAMED_REPORTS], ids=[case[0] for case in NAMED_REPORTS])
def test_named_bad_reports(memory: Memory, text: str, content_type: str, status: str, says: str) -> None:
    try:
        sent = json.loads(text)
    except (ValueError, RecursionError):
        sent = None
    answer = check_report(memory, text, content_type, sent)
    assert answer["status"] == status, answer
    if status == "error":
        assert says in answer["error"], answer["error"]


@pytest.mark.parametrize(("value", "says"), [case[1:] for case in BAD_TIMES], ids=[case[0] for case in BAD_TIMES])
def test_occurred_at_of_the_wrong_type_or_an_impossible_date_is_refused(memory: Memory, value: Any, says: str) -> None:
    text = json.dumps({"event": "probe", "occurred_at": value})
    answer = check_report(memory, text, "application/json", None)
    assert answer["status"] == "error" and says in answer["error"], answer


def test_a_report_the_sdk_cannot_encode_is_refused_at_the_sender(memory: Memory) -> None:
    before = memory.count()
    with pytest.raises(ValueError, match="surrogate"):
        memory.agent.open_session("memory", '{"event": "probe", "v": "\ud800"}')
    assert memory.count() == before


# --- questions, named --------------------------------------------------------------------------------

FTS5_SYNTAX = ['AND OR NEAR( * ^', '"', 'NEAR(rollback deploy, 5)', "text:rollback", "*", "^api", "rollback AND",
               "(((", "rollback OR OR", "'; DROP TABLE events; --", "event:probe -api +svc"]


@pytest.mark.parametrize("question", FTS5_SYNTAX)
def test_fts5_and_sql_syntax_in_a_question_gets_an_answer(memory: Memory, question: str) -> None:
    reply = check_question(memory, question, "text/plain")
    assert reply.content_type == "text/plain", reply.payload  # an answer, not an error
    structured = json.loads(check_question(memory, json.dumps({"query": question, "limit": 5}),
                                           "application/json").payload)
    assert "events" in structured, structured
    filtered = json.loads(check_question(
        memory, json.dumps({"query": question, "filters": {"trace_id": "' OR '1'='1"}}), "application/json").payload)
    assert len(filtered["events"]) == 0, "a filter value was read as SQL"


def test_sql_looking_filter_values_match_literally(memory: Memory) -> None:
    service = f"x' OR 'a'='a -- {uuid.uuid4().hex[:6]}"
    assert check_report(memory, json.dumps({"event": "probe", "service": service}), "application/json",
                        {"event": "probe", "service": service})["status"] == "stored"
    answer = json.loads(check_question(
        memory, json.dumps({"query": "probe", "filters": {"service": service}}), "application/json").payload)
    assert [e["payload"]["service"] for e in answer["events"]] == [service]
    listed = json.loads(check_question(
        memory, json.dumps({"query": "How many probes?", "filters": {"service": [service, "' OR 1=1"]}}),
        "application/json").payload)
    assert listed["answer"].startswith("1 event"), listed["answer"][:200]


BAD_QUESTIONS: list[tuple[str, str, str, str]] = [
    ("plain-of-100kB", "why " * 25_000, "text/plain", "characters long"),
    ("structured-of-100kB", json.dumps({"query": "why " * 25_000}), "application/json", "characters long"),
    ("blank", " \n\t ", "text/plain", "empty"),
    ("query-not-a-string", json.dumps({"query": ["why"]}), "application/json", '"query"'),
    ("limit-a-string", json.dumps({"query": "why", "limit": "10"}), "application/json", '"limit"'),
    ("limit-zero", json.dumps({"query": "why", "limit": 0}), "application/json", '"limit"'),
    ("limit-huge", json.dumps({"query": "why", "limit": 10**9}), "application/json", '"limit"'),
    ("limit-a-float", json.dumps({"query": "why", "limit": 2.5}), "application/json", '"limit"'),
    ("since-february-30", json.dumps({"query": "why", "since": "2026-02-30"}), "application/json", "ISO-8601"),
    ("since-after-until", json.dumps({"query": "why", "since": "2026-11-20", "until": "2026-11-01"}),
     "application/json", "earlier"),
    ("filters-a-list", json.dumps({"query": "why", "filters": ["api"]}), "application/json", '"filters"'),
    ("filter-unknown", json.dumps({"query": "why", "filters": {"payload": "x"}}), "application/json",
     "unknown filter"),
    ("filter-a-number", json.dumps({"query": "why", "filters": {"service": 5}}), "application/json", "filter"),
]


@pytest.mark.parametrize(("text", "content_type", "says"), [c[1:] for c in BAD_QUESTIONS],
                         ids=[c[0] for c in BAD_QUESTIONS])
def test_bad_questions_get_a_clear_error(memory: Memory, text: str, content_type: str, says: str) -> None:
    reply = check_question(memory, text, content_type)
    answer = json.loads(reply.payload)
    assert answer["status"] == "error" and says in answer["error"], answer


@pytest.mark.parametrize("content_type", ["application/x-unknown", "", "image/png", "text/markdown"])
def test_a_question_with_an_unknown_content_type_is_answered(memory: Memory, content_type: str) -> None:
    reply = check_question(memory, "What probes were reported today?", content_type)
    assert reply.content_type == "text/plain"


# --- bytes that are not an envelope ----------------------------------------------------------------------

def _envelope(**changes: Any) -> dict[str, Any]:
    env = Envelope(message_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), from_handle="garbler",
                   to_handle="memory", payload='{"event": "forged"}', content_type="application/json",
                   sent_at=time.time(), type="session_open", trace_id="t-garbled", sequence=1)
    obj = msgpack.unpackb(encode_envelope(env))
    obj.update(changes)
    return dict(obj)


GARBLED: list[tuple[str, bytes]] = [
    ("random-bytes", os.urandom(300)),
    ("empty", b""),
    ("truncated-envelope", msgpack.packb(_envelope())[:60]),
    ("trailing-bytes", msgpack.packb(_envelope()) + b"\x00"),
    ("msgpack-list", msgpack.packb([1, 2, 3])),
    ("version-2", msgpack.packb(_envelope(v=2))),
    ("payload-not-utf8", msgpack.packb({**_envelope(), "payload": b"\xff\xfe{"}, use_bin_type=False)),
    ("payload-as-binary", msgpack.packb({**_envelope(), "payload": b"{}"}, use_bin_type=True)),
    ("sent-at-nan", msgpack.packb(_envelope(sent_at=float("nan")))),
    ("bad-from-handle", msgpack.packb(_envelope(from_handle="Not A Handle"))),
    ("unknown-type", msgpack.packb(_envelope(type="session_explode"))),
    ("sequence-zero", msgpack.packb(_envelope(sequence=0))),
]


@pytest.mark.parametrize("data", [g[1] for g in GARBLED], ids=[g[0] for g in GARBLED])
def test_a_garbled_envelope_on_the_inbox_is_terminated_and_logged(memory: Memory, data: bytes) -> None:
    before, rejected = memory.count(), memory.daemon.log().count("rejected")
    publish_raw(memory.url, memory_inbox("garbler"), data)
    wait_for(lambda: memory.daemon.log().count("rejected") > rejected, 30, "the daemon to log the rejection")
    assert memory.stats()["events"] == before == memory.count()
    assert memory.daemon.running


@pytest.mark.parametrize(("sent_at", "stored"), [(None, 1), (1e15, 0), (-1e12, 0)],
                         ids=["session-opened-without-the-sdk", "sender-clock-in-year-31690708",
                              "sender-clock-before-1970"])
def test_a_wellformed_envelope_published_without_the_sdk_is_handled_once(memory: Memory, sent_at: float | None,
                                                                        stored: int) -> None:
    # Published without the SDK, by a sender that never registered: its open is a session open like any
    # other (the subject names its sender). The report is judged like any other (stored, or refused when
    # the sender's clock cannot say when it happened) and answered once, in the sender's inbox; it is
    # not failed and redelivered.
    env = _envelope(payload=json.dumps({"event": "forged", "n": uuid.uuid4().hex}))
    if sent_at is not None:
        env["sent_at"] = sent_at
    replies_before = replies_to(memory.url, "garbler")
    publish_raw(memory.url, memory_inbox("garbler"), msgpack.packb(env))
    wait_for(lambda: replies_to(memory.url, "garbler") == replies_before + 1, 30, "the daemon to answer")
    assert len(memory.rows_of(env["session_id"])) == stored
    assert f"handler failed on message {env['message_id']}" not in memory.daemon.log()


def replies_to(url: str, handle: str) -> int:
    """Messages waiting in ``handle``'s inbox (the normal lane), read from the stream's subject counts."""

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(STREAM_NAME, subjects_filter=f"mesh.inbox.{handle}.*")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(go())


# --- fuzz ------------------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.text(max_size=12) | st.sampled_from(
    ["occurred_at", "trace_id", "service", "summary", "reason", "query", "op", "limit", "filters"])
reports = st.builds(lambda event, extra: {"event": event, **extra},
                    st.text(max_size=40) | st.sampled_from(["rollback", "deploy", "flaky_test", "anomaly"]),
                    st.dictionaries(field_names, json_values, max_size=6))
content_types = st.sampled_from(["application/json", "text/plain", "", "application/x-unknown",
                                 "text/json; charset=utf-8", "application/problem+json"])


@FUZZ
@given(report=reports, ascii_only=st.booleans(), content_type=content_types)
def test_fuzzed_reports_are_stored_as_sent_or_refused(memory: Memory, report: dict[str, Any], ascii_only: bool,
                                                       content_type: str) -> None:
    text = json.dumps(report, ensure_ascii=ascii_only)
    reply = memory.send(text, content_type)
    answer = json.loads(reply.payload)
    rows = memory.rows_of(reply.session)
    if "query" in report or "op" in report:  # a structured question or an operation, never stored
        assert rows == []
        assert answer.get("status") != "stored", answer
    elif answer.get("status") == "stored":
        assert len(rows) == 1 and canonical(json.loads(rows[0][1])) == canonical(report)
        assert rows[0][0] == " ".join(report["event"].split()).lower()
    else:
        assert answer["status"] == "error" and answer["error"].strip() and rows == [], answer


@FUZZ
@given(text=st.text(max_size=300), content_type=content_types)
def test_fuzzed_text_gets_an_answer_or_an_error(memory: Memory, text: str, content_type: str) -> None:
    reply = memory.send(text, content_type)
    rows = memory.rows_of(reply.session)
    if reply.content_type == "text/plain":
        assert reply.payload.strip() and rows == []
        return
    answer = json.loads(reply.payload)
    if answer.get("status") == "stored":
        assert len(rows) == 1 and canonical(json.loads(rows[0][1])) == canonical(json.loads(text))
    elif "answer" in answer:
        assert "events" in answer and rows == []
    elif "status" in answer:
        assert answer["status"] == "error" and answer["error"].strip() and rows == [], answer
    else:
        assert "events" in answer or "handle" in answer, answer  # an answer or the stats


time_values = (st.none() | st.integers() | st.floats() | st.text(max_size=30)
               | st.datetimes().map(lambda d: d.isoformat()) | st.booleans())
filters = st.dictionaries(st.sampled_from(["event", "service", "from_handle", "trace_id", "other"]),
                          st.text(max_size=10) | st.lists(st.text(max_size=10), max_size=3) | st.integers(),
                          max_size=3)
questions = st.fixed_dictionaries(
    {"query": st.text(max_size=200) | st.sampled_from(FTS5_SYNTAX)},
    optional={"limit": st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
              "since": time_values, "until": time_values, "filters": filters},
)


@FUZZ
@given(question=questions)
def test_fuzzed_structured_questions_get_an_answer_or_an_error(memory: Memory, question: dict[str, Any]) -> None:
    reply = memory.send(json.dumps(question), "application/json")
    answer = json.loads(reply.payload)
    assert memory.rows_of(reply.session) == []
    if "answer" in answer:
        assert isinstance(answer["events"], list)
        assert len(answer["events"]) <= (question["limit"] if isinstance(question.get("limit"), int)
                                         and not isinstance(question.get("limit"), bool) else 10_000)
    else:
        assert answer["status"] == "error" and answer["error"].strip(), answer


@settings(max_examples=max(COUNTS.fuzz_examples // 3, 20), deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=512))
def test_fuzzed_bytes_on_the_inbox_never_reach_storage(memory: Memory, data: bytes) -> None:
    before, rejected = memory.count(), memory.daemon.log().count("rejected")
    publish_raw(memory.url, memory_inbox("garbler"), data)
    wait_for(lambda: memory.daemon.log().count("rejected") > rejected, 30, "the daemon to log the rejection")
    assert memory.count() == before


def test_the_daemon_is_healthy_after_all_that(memory: Memory) -> None:
    def all_embedded() -> bool:  # stored first, embedded behind
        total, embedded = embedded_count(memory.db)
        return total == embedded

    wait_for(all_embedded, 120, "the embedding backlog to drain")
    stats = memory.stats()
    assert stats["events"] == memory.count() == stats["index"]["size"]
    assert stats["health"]["status"] == "ok" and stats["embedding"]["failed"] == 0
    assert memory.daemon.running
    assert not re.search(r"Traceback|CRITICAL", memory.daemon.log()), memory.daemon.log()


# --- size limits (last: the big reports they store would swell later answers) ---------------------------

def test_a_10MB_payload_is_refused_at_the_sender(memory: Memory) -> None:
    before = memory.count()
    with pytest.raises(PayloadTooLarge) as err:
        memory.agent.open_session("memory", json.dumps({"event": "probe", "blob": "x" * 10_000_000}),
                                  content_type="application/json")
    assert err.value.size > 10_000_000 and err.value.limit < err.value.size
    assert memory.count() == before


def test_a_payload_just_under_the_limit_is_stored_and_answers_stay_within_it(memory: Memory) -> None:
    limit = 1024 * 1024  # the SDK's default max_payload
    report = {"event": "core_dump", "service": "huge-svc", "blob": "word " * ((limit - 200) // 5)}
    text = json.dumps(report)
    assert limit - 300 < len(text.encode()) <= limit
    answer = check_report(memory, text, "application/json", report)
    assert answer["status"] == "stored"
    # A question whose answer would carry three of them is still answered within one mesh message: the
    # events that do not fit are left out and counted, with a note saying how to get them.
    for _ in range(2):
        assert check_report(memory, text, "application/json", report)["status"] == "stored"
    raw = check_question(memory, json.dumps({"query": "core dump", "filters": {"event": "core_dump"}}),
                         "application/json").payload
    reply = json.loads(raw)
    assert len(raw) <= limit and "status" not in reply, str(reply)[:300]
    assert reply["total"] == 3 and len(reply["events"]) + reply["left_out"] == 3 and reply["left_out"] >= 1
    assert any("left out to fit one mesh message" in note for note in reply["notes"])
    text_reply = check_question(memory, "What core dumps happened today?", "text/plain")
    assert text_reply.content_type == "text/plain"
