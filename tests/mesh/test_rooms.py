"""Rooms on a real server: create with members, post, members receive in order, replay from a sequence,
non-members refused, join/invite/leave, close, limits, forged events, and rooms surviving restarts of
agents and of nats-server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import nats
import nats.js.errors
import pytest

from mesh import (
    BridgeError,
    HandleNotFound,
    InvalidHandle,
    MeshError,
    NatsServer,
    NotRegistered,
    NotRoomMember,
    PayloadTooLarge,
    RoomClosed,
    RoomEvent,
    RoomFull,
    RoomInfo,
    RoomNotFound,
)
from mesh.constants import ROOMS_STREAM
from mesh.handles import room_subject
from mesh.rooms import encode_room_event
from tests.mesh.helpers import Factory, eventually, inbox, next_event


async def test_members_receive_posts_in_order_and_the_poster_does_not(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    memory = await mesh_agent("memory")
    outsider = await mesh_agent("outsider")
    lead_in, ops_in, memory_in, outsider_in = inbox(lead), inbox(ops), inbox(memory), inbox(outsider)

    room_id = await lead.create_room("incident: checkout errors", ["ops", "memory"])
    uuid.UUID(room_id)  # a uuid, like tailbus's
    posted = [await lead.post_room_message(room_id, f"update {i}") for i in range(1, 4)]
    assert [p.room_seq for p in posted] == [1, 2, 3]
    reply = await ops.post_room_message(room_id, '{"kind": "finding"}', content_type="application/json",
                                        trace_id="t-81")

    got = [await next_event(memory_in) for _ in range(4)]
    assert [(e.room_seq, e.sender_handle, e.payload) for e in got] == [
        (1, "lead", "update 1"), (2, "lead", "update 2"), (3, "lead", "update 3"), (4, "ops", '{"kind": "finding"}')]
    first, last = got[0], got[3]
    assert (first.room_id, first.event_type, first.subject_handle, first.content_type) == (
        room_id, "message_posted", "", "text/plain")
    assert (first.title, first.members, first.event_id) == (
        "incident: checkout errors", ("lead", "ops", "memory"), posted[0].event_id)
    assert first.trace_id == room_id  # no trace id given: the room's, which defaults to the room id
    assert (last.trace_id, last.content_type, last.event_id) == ("t-81", "application/json", reply.event_id)
    assert first.sent_at > 1_600_000_000
    assert [(await next_event(ops_in)).room_seq for _ in range(3)] == [1, 2, 3]  # not its own post
    assert (await next_event(lead_in)).room_seq == 4  # the poster never gets its own events back
    await asyncio.sleep(0.2)
    assert lead_in.empty() and ops_in.empty() and outsider_in.empty()


async def test_replay_returns_every_event_since_a_sequence(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    room_id = await lead.create_room("replay", ["ops"])
    for i in range(5):
        await (lead if i % 2 == 0 else ops).post_room_message(room_id, f"m{i}")
    everything = await ops.replay_room(room_id)
    assert [(e.room_seq, e.sender_handle, e.payload) for e in everything] == [
        (1, "lead", "m0"), (2, "ops", "m1"), (3, "lead", "m2"), (4, "ops", "m3"), (5, "lead", "m4")]
    assert [e.room_seq for e in await lead.replay_room(room_id, since_seq=3)] == [4, 5]
    assert await lead.replay_room(room_id, since_seq=5) == []
    with pytest.raises(ValueError):
        await lead.replay_room(room_id, since_seq=-1)


async def test_a_non_member_can_neither_post_nor_read(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    outsider = await mesh_agent("outsider")
    room_id = await lead.create_room("private", [])
    await lead.post_room_message(room_id, "members only")
    for call in (outsider.post_room_message(room_id, "let me in"), outsider.replay_room(room_id),
                 outsider.list_room_members(room_id), outsider.close_room(room_id), outsider.leave_room(room_id)):
        with pytest.raises(NotRoomMember) as info:
            await call
        assert (info.value.room_id, info.value.handle) == (room_id, "outsider")
    # Code written for tailbus catches BridgeError and reads .error and .request_type.
    with pytest.raises(BridgeError) as caught:
        await outsider.post_room_message(room_id, "again")
    assert caught.value.request_type == "post_room" and "not a member" in caught.value.error
    assert await outsider.list_rooms() == []
    assert [e.payload for e in await lead.replay_room(room_id)] == ["members only"]


async def test_join_invite_and_leave_are_events_members_see(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    late = await mesh_agent("late")
    guest = await mesh_agent("guest")
    lead_in, late_in, guest_in = inbox(lead), inbox(late), inbox(guest)
    room_id = await lead.create_room("open door", [])
    await lead.post_room_message(room_id, "before anyone came")

    assert await late.join_room(room_id) is True
    joined = await next_event(lead_in)
    assert (joined.event_type, joined.sender_handle, joined.subject_handle, joined.members) == (
        "member_joined", "late", "late", ("lead", "late"))
    assert await late.join_room(room_id) is True  # already a member: no new event
    assert await lead.invite_to_room(room_id, "guest") is True
    invited = await next_event(guest_in)  # the invitee learns it was invited
    assert (invited.event_type, invited.sender_handle, invited.subject_handle) == ("member_joined", "lead", "guest")
    assert (await next_event(late_in)).subject_handle == "guest"
    assert await late.list_room_members(room_id) == ["lead", "late", "guest"]

    # A member's replay covers what was sent while it was a member (see docs/mesh.md, "Rooms").
    assert [(e.room_seq, e.event_type) for e in await late.replay_room(room_id)] == [
        (2, "member_joined"), (3, "member_joined")]
    assert len(await lead.replay_room(room_id)) == 3

    assert await guest.leave_room(room_id) is True
    left = await next_event(lead_in)
    assert (left.event_type, left.subject_handle, left.members) == ("member_left", "guest", ("lead", "late"))
    with pytest.raises(NotRoomMember):
        await guest.post_room_message(room_id, "I left")
    with pytest.raises(HandleNotFound):
        await lead.invite_to_room(room_id, "nobody")
    with pytest.raises(InvalidHandle):
        await lead.invite_to_room(room_id, "Not Valid")


async def test_a_closed_room_refuses_posts_with_a_clear_error(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    ops_in = inbox(ops)
    room_id = await lead.create_room("short-lived", ["ops"])
    await lead.post_room_message(room_id, "wrapping up")
    assert await lead.close_room(room_id) is True
    assert (await next_event(ops_in)).event_type == "message_posted"
    closed = await next_event(ops_in)
    assert (closed.event_type, closed.sender_handle, closed.room_seq) == ("room_closed", "lead", 2)
    for call in (ops.post_room_message(room_id, "one more thing"), lead.post_room_message(room_id, "me too")):
        with pytest.raises(RoomClosed) as info:
            await call
        # tailbus agents test for a closed room with: isinstance(exc, BridgeError) and "room" and "is closed" in it
        assert isinstance(info.value, BridgeError) and "room" in str(info.value) and "is closed" in str(info.value)
    outsider = await mesh_agent("outsider")
    with pytest.raises(RoomClosed):
        await outsider.join_room(room_id)
    assert await ops.close_room(room_id) is True  # closing again: nothing changes
    assert [e.event_type for e in await ops.replay_room(room_id)] == ["message_posted", "room_closed"]
    assert await ops.leave_room(room_id) is True  # members may still leave
    [info_] = await lead.list_rooms()
    assert (info_.status, info_.members, info_.next_seq) == ("closed", ("lead",), 4)


async def test_limits_on_events_and_bytes(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead", max_payload=2000)
    room_id = await lead.create_room("tiny", [], max_events=3, max_bytes=1000)
    await lead.post_room_message(room_id, "x" * 600)
    with pytest.raises(RoomFull) as info:
        await lead.post_room_message(room_id, "y" * 401)
    assert (info.value.limit, info.value.value) == ("max_bytes", 1000)
    await lead.post_room_message(room_id, "z" * 400)
    await lead.post_room_message(room_id, "")
    with pytest.raises(RoomFull) as info:
        await lead.post_room_message(room_id, "")
    assert info.value.limit == "max_events"
    assert await lead.close_room(room_id)  # a full room can still be closed
    assert [e.room_seq for e in await lead.replay_room(room_id)] == [1, 2, 3, 4]  # refused posts took no seq
    with pytest.raises(PayloadTooLarge):
        await lead.post_room_message(await lead.create_room("other", []), "x" * 2001)


async def test_room_errors(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    with pytest.raises(HandleNotFound):
        await lead.create_room("with a ghost", ["ghost"])
    with pytest.raises(InvalidHandle):
        await lead.create_room("bad member", ["Bad Handle"])
    with pytest.raises(TypeError):
        await lead.create_room("members as a string", "ops")  # type: ignore[arg-type]
    for bad in (str(uuid.uuid4()), "not a room", "mesh.room.>"):
        with pytest.raises(RoomNotFound):
            await lead.post_room_message(bad, "hello?")
        with pytest.raises(RoomNotFound):
            await lead.join_room(bad)
    with pytest.raises(ValueError):
        await lead.create_room("long trace", [], trace_id="t" * 129)
    loose = await mesh_agent("loose", register=False)
    with pytest.raises(NotRegistered):
        await loose.create_room("not registered", [])


async def test_list_rooms_shows_the_rooms_of_this_agent(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    first = await lead.create_room("first", ["ops"], trace_id="t-81", max_events=50)
    await lead.create_room("lead only", [])
    await asyncio.sleep(0.01)
    await lead.post_room_message(first, "bump")  # the most recently changed room comes first
    rooms = await lead.list_rooms()
    assert [r.title for r in rooms] == ["first", "lead only"]
    info = rooms[0]
    assert isinstance(info, RoomInfo)
    assert (info.room_id, info.created_by, info.members, info.status, info.next_seq, info.trace_id,
            info.max_events) == (first, "lead", ("lead", "ops"), "open", 2, "t-81", 50)
    assert info.created_at <= info.updated_at <= time.time()
    assert [r.title for r in await ops.list_rooms()] == ["first"]


async def test_a_forged_room_event_never_reaches_the_handler(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    lead = await mesh_agent("lead")
    member = await mesh_agent("member")
    member_in = inbox(member)
    room_id = await lead.create_room("guarded", ["member"])
    await lead.post_room_message(room_id, "genuine")
    assert (await next_event(member_in)).payload == "genuine"

    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    def forged(sender: str, **fields: object) -> bytes:
        values: dict[str, object] = {"room_id": room_id, "room_seq": 1, "sender_handle": sender, "subject_handle": "",
                                     "payload": "forged", "content_type": "text/plain",
                                     "event_type": "message_posted", "trace_id": "t", "event_id": str(uuid.uuid4()),
                                     "sent_at": time.time(), "members": ("lead", "member"), "title": "guarded"}
        values.update(fields)
        return encode_room_event(RoomEvent(**values))  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        # a non-member posting into a member's copies as itself
        await js.publish(room_subject("member", room_id, "mallory"), forged("mallory"))
        # an event claiming another sender than its subject
        await js.publish(room_subject("member", room_id, "mallory"), forged("lead"))
        # a sequence the room never assigned
        await js.publish(room_subject("member", room_id, "lead"), forged("lead", room_seq=99))
        await nc.close()
        await lead.post_room_message(room_id, "after the forgeries")
        assert (await next_event(member_in)).payload == "after the forgeries"
    assert member_in.empty()
    assert "mallory is not a member of room" in caplog.text
    assert "sent on mesh.room.member." in caplog.text and "from lead" in caplog.text
    assert "never assigned seq 99" in caplog.text
    assert [e.payload for e in await member.replay_room(room_id)] == ["genuine", "after the forgeries"]


async def test_an_offline_member_gets_the_events_when_it_returns(mesh_agent: Factory) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    room_id = await lead.create_room("while you were out", ["ops"])
    await ops.close()
    for i in range(3):
        await lead.post_room_message(room_id, f"m{i}")
    back = await mesh_agent("ops", register=False)
    back_in = inbox(back)
    await back.register()
    assert [(await next_event(back_in)).payload for _ in range(3)] == ["m0", "m1", "m2"]


async def test_rooms_survive_a_nats_server_restart(mesh_agent: Factory, nats_server: NatsServer) -> None:
    lead = await mesh_agent("lead")
    ops = await mesh_agent("ops")
    ops_in = inbox(ops)
    room_id = await lead.create_room("durable", ["ops"])
    await lead.post_room_message(room_id, "before")
    assert (await next_event(ops_in)).payload == "before"

    await asyncio.to_thread(nats_server.stop)
    assert await eventually(lambda: _disconnected(lead, ops))
    await asyncio.to_thread(nats_server.start)
    assert await eventually(lambda: _connected(lead, ops), timeout=20)

    await lead.post_room_message(room_id, "after")
    assert (await next_event(ops_in, 20)).payload == "after"
    assert [e.payload for e in await ops.replay_room(room_id)] == ["before", "after"]
    assert await lead.list_room_members(room_id) == ["lead", "ops"]


async def _connected(*agents: object) -> bool:
    return all(a.is_connected for a in agents)  # type: ignore[attr-defined]


async def _disconnected(*agents: object) -> bool:
    return not any(a.is_connected for a in agents)  # type: ignore[attr-defined]


async def test_an_agent_on_a_server_without_room_permissions_still_works(tmp_path: object) -> None:
    """A permissions file written before rooms: sessions go on, room methods say what is missing."""
    from pathlib import Path

    from mesh import AsyncAgent, NatsAuth

    directory = Path(str(tmp_path))
    config = directory / "server.conf"
    deny = '["mesh.room.>", "$JS.API.STREAM.*.MESH_ROOMS", "$JS.API.STREAM.*.KV_mesh_rooms", ' \
           '"$JS.API.CONSUMER.*.MESH_ROOMS.>"]'
    config.write_text("max_payload: 2097152\nauthorization { users: [\n"
                      f"  {{user: a, password: a, permissions: {{publish: {{deny: {deny}}}}}}}\n"
                      "  {user: admin, password: admin}\n]}\n")
    with NatsServer(store_dir=directory / "nats", config_file=config) as server:
        async with AsyncAgent("a", servers=server.url, auth=NatsAuth(user="a", password="a")) as a, \
                AsyncAgent("b", servers=server.url, auth=NatsAuth(user="a", password="a")) as b:
            b_in = inbox(b)
            started = time.monotonic()
            await a.register()
            await b.register()
            assert time.monotonic() - started < 5  # refused at once, not after API timeouts
            await a.open_session("b", "sessions still work")
            assert (await asyncio.wait_for(b_in.get(), 10)).payload == "sessions still work"
            with pytest.raises(MeshError, match="rooms are not available") as info:
                await a.create_room("nope", [])
            assert info.value.request_type == "create_room"
            nc = await nats.connect(server.url, user="admin", password="admin")
            with pytest.raises(nats.js.errors.NotFoundError):
                await nc.jetstream().stream_info(ROOMS_STREAM)  # never created
            await nc.close()


async def test_concurrent_posters_get_unique_sequences_and_keep_their_own_order(mesh_agent: Factory) -> None:
    posters = [await mesh_agent(f"p{i}") for i in range(4)]
    reader = await mesh_agent("reader")
    reader_in = inbox(reader)
    room_id = await posters[0].create_room("busy", [p.handle for p in posters[1:]] + ["reader"])
    per_poster = 10

    async def burst(agent: object) -> list[int]:
        posted = await asyncio.gather(*(agent.post_room_message(room_id, f"{agent.handle}:{i}")  # type: ignore[attr-defined]
                                        for i in range(per_poster)))
        return [p.room_seq for p in posted]

    seqs = await asyncio.gather(*(burst(p) for p in posters))
    everything = sorted(s for group in seqs for s in group)
    assert everything == list(range(1, 4 * per_poster + 1))  # unique, no gaps, under contention
    got = [await next_event(reader_in) for _ in range(4 * per_poster)]
    for poster in posters:
        mine = [e for e in got if e.sender_handle == poster.handle]
        assert [e.room_seq for e in mine] == sorted(e.room_seq for e in mine)  # each sender's order kept
        assert len(mine) == per_poster
    assert [e.room_seq for e in await reader.replay_room(room_id)] == everything
