"""The events stream's entries (pure, no server) and the store's insert under given ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory_agent.cluster.codec import (
    KIND_HEADER,
    ForgetEntry,
    ReportEntry,
    StreamFormatError,
    decode,
    decode_vector,
    encode_forget,
    encode_report,
    encode_vector,
)
from memory_agent.errors import InvalidArgument
from memory_agent.retention import ForgetRequest
from memory_agent.store.events import EventStore
from memory_agent.types import Filters, NewEvent

pytestmark = pytest.mark.timeout(30)


def event(mid: str, trace: str = "t-1") -> NewEvent:
    return NewEvent(message_id=mid, session="s", from_handle="deploy", trace_id=trace, event="rollback",
                    service="api", occurred_at=1.5e9, received_at=1.5e9 + 2, payload={"event": "rollback", "n": [1]},
                    text="rollback api", sender_verified=True)


def test_a_report_round_trips_with_its_sender_and_message_id_as_the_dedup_key() -> None:
    body, headers = encode_report(event("m-1"))
    assert headers == {KIND_HEADER: "report", "Nats-Msg-Id": "report.deploy.m-1"}
    assert decode(7, body, headers) == ReportEntry(7, event("m-1"))


def test_a_forget_round_trips() -> None:
    body, headers = encode_forget(ForgetRequest("before", 1.6e9), by="ops", request_id="r-1")
    assert headers["Nats-Msg-Id"] == "forget.ops.r-1"
    assert decode(9, body, headers) == ForgetEntry(9, ForgetRequest("before", 1.6e9), "ops")


@pytest.mark.parametrize(("body", "headers", "says"), [
    (b"not json", {KIND_HEADER: "report"}, "not JSON"),
    (b'{"v": 99}', {KIND_HEADER: "report"}, "newer"),
    (b'{"v": 1, "message_id": "m"}', {KIND_HEADER: "report"}, "wrong shape"),
    (b'{"v": 1, "selector": "everything", "value": 1}', {KIND_HEADER: "forget"}, "unknown forget selector"),
    (b'{"v": 1}', None, "unknown kind"),
])
def test_unreadable_entries_name_their_sequence(body: bytes, headers: dict[str, str] | None, says: str) -> None:
    with pytest.raises(StreamFormatError, match=says) as err:
        decode(42, body, headers)
    assert err.value.seq == 42 and "42" in str(err.value)


async def test_insert_under_given_ids(tmp_path: Path) -> None:
    async with await EventStore.open(tmp_path / "m.db", filter_columns=True) as store:
        results = await store.insert([event("a"), event("b"), event("a")], ids=[5, 9, 12])
        assert [(r.id, r.duplicate) for r in results] == [(5, False), (9, False), (5, True)]
        assert await store.last_id() == 9 and await store.count(None, Filters()) == 2
        await store.delete([9])
        assert await store.last_id() == 9  # ever stored: a replica resumes after it
        with pytest.raises(InvalidArgument, match="above the last id"):
            await store.insert([event("c")], ids=[9])
        with pytest.raises(InvalidArgument, match="increasing"):
            await store.insert([event("c"), event("d")], ids=[20, 20])
        assert (await store.insert([event("c")]))[0].id == 10  # assigned ids continue after given ones
        assert await store.count(None, Filters(trace_id=("t-1",))) == 2


def test_a_vector_round_trips_with_its_model_and_dedup_id() -> None:
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    body, headers = encode_vector(42, vector, model="sentence-transformers/all-MiniLM-L6-v2", by="memory-2")
    assert len(body) == 384 * 4 and headers["Nats-Msg-Id"] == "42.sentence-transformers/all-MiniLM-L6-v2"
    entry = decode_vector(7, body, headers)
    assert entry.event == 42 and entry.model == "sentence-transformers/all-MiniLM-L6-v2" and entry.by == "memory-2"
    assert entry.vector.dtype == np.float32 and np.array_equal(entry.vector, vector)


@pytest.mark.parametrize(("change", "reason"), [
    ({"Memory-Dim": "383"}, "bytes, not 1532"),
    ({"Memory-Event": "x"}, "valid"),
    ({"Memory-Model": ""}, "model"),
    ({KIND_HEADER: "report"}, "not a vector"),
])
def test_a_bad_vector_entry_is_refused_with_the_reason(change: dict[str, str], reason: str) -> None:
    body, headers = encode_vector(1, np.ones(384, dtype=np.float32), model="m")
    with pytest.raises(StreamFormatError, match=reason):
        decode_vector(3, body, {**headers, **change})
    with pytest.raises(StreamFormatError, match="not finite"):
        decode_vector(3, np.full(384, np.nan, dtype=np.float32).tobytes(), headers)
