"""Pure parts of rooms, without a server: the record's rules and limits, and the event codec."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import EnvelopeError, MeshError, NotRoomMember, RoomClosed, RoomEvent, RoomFull
from mesh.constants import MAX_ROOM_MEMBERS
from mesh.handles import parse_room_subject, room_filter, room_replay_filter, room_subject
from mesh.rooms import RoomRecord, decode_room_event, encode_room_event


def room(**overrides: object) -> RoomRecord:
    values: dict[str, object] = {"trace_id": "t-1", "max_events": 5, "max_bytes": 100, "now": 1000.0}
    values.update(overrides)
    return RoomRecord.new("r1", "incident", "lead", ("ops", "memory", "ops"), **values)  # type: ignore[arg-type]


def test_a_new_room_has_the_creator_first_and_no_duplicates() -> None:
    r = room()
    assert r.members == ("lead", "ops", "memory")
    assert (r.status, r.seq, r.events, r.payload_bytes) == ("open", 0, 0, 0)
    info = r.info()
    assert (info.next_seq, info.home_node_id, info.created_by, info.trace_id) == (1, "", "lead", "t-1")


def test_posts_take_the_next_sequence_and_count_bytes() -> None:
    r = room()
    first = r.post("ops", 10, 1001.0)
    assert (first.event_type, first.record.seq, first.record.payload_bytes) == ("message_posted", 1, 10)
    second = first.record.post("lead", 5, 1002.0)
    assert (second.record.seq, second.record.events, second.record.updated_at) == (2, 2, 1002.0)
    assert r.seq == 0  # records are values: the old one is unchanged


def test_only_members_post_close_and_list() -> None:
    r = room()
    with pytest.raises(NotRoomMember) as info:
        r.post("stranger", 1, 1001.0)
    assert (info.value.room_id, info.value.handle) == ("r1", "stranger")
    with pytest.raises(NotRoomMember):
        r.close("stranger", 1001.0)
    with pytest.raises(NotRoomMember):
        r.require_member("stranger")


def test_anyone_may_join_an_open_room_and_members_may_invite() -> None:
    r = room()
    joined = r.add("stranger", "stranger", 1001.0)
    assert joined is not None
    assert (joined.event_type, joined.subject, joined.record.members[-1]) == ("member_joined", "stranger", "stranger")
    assert r.add("ops", "ops", 1001.0) is None  # already a member: nothing happens
    invited = r.add("lead", "guest", 1001.0)
    assert invited is not None and invited.record.is_member("guest")
    with pytest.raises(NotRoomMember):
        r.add("stranger", "guest", 1001.0)  # only members invite


def test_membership_spans_say_who_was_a_member_at_each_seq() -> None:
    r = room().post("lead", 1, 1.0).record  # seq 1
    left = r.remove("ops", 2.0)  # seq 2
    assert (left.event_type, left.subject) == ("member_left", "ops")
    r = left.record
    assert not r.is_member("ops")
    assert r.was_member("ops", 1) and r.was_member("ops", 2) and not r.was_member("ops", 3)
    with pytest.raises(NotRoomMember):
        r.remove("ops", 3.0)
    joined = r.add("stranger", "stranger", 3.0)  # seq 3
    assert joined is not None
    r = joined.record
    assert r.was_member("stranger", 3) and not r.was_member("stranger", 2)  # nothing before it joined
    back = r.add("ops", "ops", 4.0)  # seq 4
    assert back is not None and back.record.was_member("ops", 4) and not back.record.was_member("ops", 3)
    assert not r.was_member("nobody", 1)


def test_a_closed_room_refuses_posts_and_joins_but_members_may_leave() -> None:
    closed = room().close("ops", 1001.0)
    assert closed is not None and closed.event_type == "room_closed"
    r = closed.record
    assert r.status == "closed" and r.close("lead", 1002.0) is None  # closing again changes nothing
    with pytest.raises(RoomClosed) as info:
        r.post("lead", 1, 1002.0)
    assert "room" in str(info.value) and "is closed" in str(info.value)  # tailbus agents match these words
    with pytest.raises(RoomClosed):
        r.add("stranger", "stranger", 1002.0)
    assert r.remove("memory", 1002.0).record.members == ("lead", "ops")


def test_limits_refuse_posts_and_joins_but_never_leaving_or_closing() -> None:
    r = room(max_events=2)
    r = r.post("lead", 1, 1.0).record.post("lead", 1, 2.0).record
    with pytest.raises(RoomFull) as info:
        r.post("lead", 1, 3.0)
    assert (info.value.limit, info.value.value) == ("max_events", 2)
    with pytest.raises(RoomFull):
        r.add("stranger", "stranger", 3.0)
    r = r.remove("ops", 3.0).record
    closed = r.close("lead", 4.0)
    assert closed is not None and closed.record.seq == 4
    with pytest.raises(RoomFull) as info:
        room(max_bytes=10).post("lead", 11, 1.0)
    assert info.value.limit == "max_bytes"
    crowd = tuple(f"m{i}" for i in range(MAX_ROOM_MEMBERS))
    with pytest.raises(RoomFull) as info:
        RoomRecord.new("r2", "big", "lead", crowd, trace_id="t", max_events=5, max_bytes=5, now=1.0)
    assert info.value.limit == "max_members"


def test_the_record_round_trips_and_a_malformed_one_is_an_error() -> None:
    r = room().post("ops", 3, 1001.0).record.remove("memory", 1002.0).record
    assert RoomRecord.decode("r1", r.encode()) == r
    with pytest.raises(MeshError, match="malformed record"):
        RoomRecord.decode("r1", msgpack.packb({"v": 1, "status": "ajar"}))
    with pytest.raises(MeshError):
        RoomRecord.decode("r1", b"\xc1")


def test_room_subjects_put_the_member_first_and_the_poster_last() -> None:
    assert room_subject("memory", "r-1", "ops") == "mesh.room.memory.r-1.ops"
    assert room_filter("memory") == "mesh.room.memory.>"
    assert room_replay_filter("memory", "r-1") == "mesh.room.memory.r-1.*"
    assert parse_room_subject("mesh.room.memory.r-1.ops") == ("memory", "r-1", "ops")
    for bad in ("mesh.room.memory.r-1", "mesh.room.Memory.r-1.ops", "mesh.room.memory.r*.ops",
                "mesh.inbox.memory.ops", "mesh.room.memory.r-1.ops.x"):
        assert parse_room_subject(bad) is None


EVENT = RoomEvent(room_id="r-1", room_seq=3, sender_handle="ops", subject_handle="", payload="disk full",
                  content_type="text/plain", event_type="message_posted", trace_id="t-81", event_id="e-1",
                  sent_at=1700000000.5, members=("lead", "ops"), title="incident")


def test_room_events_round_trip() -> None:
    assert decode_room_event(encode_room_event(EVENT)) == EVENT


@pytest.mark.parametrize("change", [
    {"v": 2}, {"room_seq": 0}, {"room_seq": "3"}, {"type": "message"}, {"sender": "Ops"}, {"subject": "a b"},
    {"room_id": "r.1"}, {"members": ["ok", "Not OK"]}, {"members": "ops"}, {"sent_at": float("nan")},
    {"event_id": ""}, {"trace_id": "t" * 129}, {"payload": None}, {"title": 3},
])
def test_a_malformed_room_event_is_an_envelope_error(change: dict[str, object]) -> None:
    obj = msgpack.unpackb(encode_room_event(EVENT))
    obj.update(change)
    with pytest.raises(EnvelopeError):
        decode_room_event(msgpack.packb(obj))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_envelope_error(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_room_event(data)
