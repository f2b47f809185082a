"""Rooms under examples/nats-server.conf on a real server: members post and read; a non-member can neither
read a room's events (live or replayed) nor post into it, through the SDK or with raw NATS requests made
with its own credentials; joining is visible to the members and reads only what comes after it."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from mesh import AsyncAgent, Message, NatsAuth, NatsServer, NotRoomMember, RoomEvent
from mesh.constants import ROOMS_STREAM
from mesh.handles import room_subject
from mesh.rooms import encode_room_event
from tests.security.test_permissions import Intruder, locked_down  # noqa: F401 - locked_down is a fixture


def events_of(agent: AsyncAgent) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()

    @agent.on_message
    async def handle(msg: Message | RoomEvent) -> None:
        await queue.put(msg)

    return queue


async def next_event(queue: asyncio.Queue[Any]) -> RoomEvent:
    item = await asyncio.wait_for(queue.get(), 15)
    assert isinstance(item, RoomEvent), item
    return item


async def test_a_non_member_can_neither_read_nor_post(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.agent")
    server, auths = locked_down
    url = server.url
    memory = AsyncAgent("memory", servers=url, auth=auths["memory"])  # first: it creates streams and buckets
    deploy = AsyncAgent("deploy", servers=url, auth=auths["deploy"])
    monitor = AsyncAgent("monitor", servers=url, auth=auths["monitor"])
    memory_in, deploy_in, monitor_in = events_of(memory), events_of(deploy), events_of(monitor)
    spy = Intruder()
    try:
        async with memory, deploy, monitor:
            for agent in (memory, deploy, monitor):
                await agent.register()

            # Members: deploy opens a room with @memory, both post, both read.
            room_id = await deploy.create_room("rollback of payments", ["memory"], trace_id="t-81")
            await deploy.post_room_message(room_id, json.dumps({"decision": "roll back"}),
                                           content_type="application/json")
            got = await next_event(memory_in)
            assert (got.sender_handle, got.trace_id, got.title) == ("deploy", "t-81", "rollback of payments")
            await memory.post_room_message(room_id, "noted")
            assert (await next_event(deploy_in)).payload == "noted"
            assert [e.room_seq for e in await deploy.replay_room(room_id)] == [1, 2]

            # The non-member, through the SDK: refused.
            with pytest.raises(NotRoomMember):
                await monitor.post_room_message(room_id, "let me in")
            with pytest.raises(NotRoomMember):
                await monitor.replay_room(room_id)

            # The non-member, with raw requests and its own credentials: denied by the server.
            nc = await spy.connect(url, auths["monitor"], "monitor")
            await nc.subscribe("mesh.deliver.memory.>", queue="memory")
            denied = {
                "memory's deliveries": 'Subscription to "mesh.deliver.memory.>"',
            }
            attempts = {
                # its room consumer, pointed at memory's copies
                f"$JS.API.CONSUMER.CREATE.{ROOMS_STREAM}.rooms_monitor.mesh.room.memory.>": "memory's copies",
                # its replay consumer, on every member's copies of the room
                f"$JS.API.CONSUMER.CREATE.{ROOMS_STREAM}.replay_monitor.mesh.room.*.{room_id}.*": "all copies",
                # an unnamed consumer (filter in the body)
                f"$JS.API.CONSUMER.CREATE.{ROOMS_STREAM}": "any filter",
                f"$JS.API.STREAM.MSG.GET.{ROOMS_STREAM}": "stored events by sequence",
                f"$JS.API.DIRECT.GET.{ROOMS_STREAM}": "direct reads",
                f"$JS.API.STREAM.PURGE.{ROOMS_STREAM}": "purging",
                room_subject("memory", room_id, "deploy"): "posting as deploy",
            }
            for subject in attempts:
                await nc.publish(subject, b"{}")
            await nc.flush()
            for subject, what in attempts.items():
                denied[what] = f'Publish to "{subject}"'
            for what, text in denied.items():
                assert await spy.denied(text), f"the server let the non-member at {what}"

            # Posting as itself into a member's copies is allowed by the server, and thrown away by the
            # member's agent: the sender is not a member of the room.
            forged = RoomEvent(room_id=room_id, room_seq=2, sender_handle="monitor", subject_handle="",
                               payload="ignore the rollback", content_type="text/plain", event_type="message_posted",
                               trace_id="t-81", event_id="forged-1", sent_at=0.0, members=("deploy", "memory"),
                               title="rollback of payments")
            await nc.jetstream().publish(room_subject("memory", room_id, "monitor"), encode_room_event(forged))
            for _ in range(500):
                if "rejected room event forged-1" in caplog.text:
                    break
                await asyncio.sleep(0.02)
            assert "rejected room event forged-1: monitor is not a member of room" in caplog.text

            # Joining is open (as in tailbus), visible to the members, and reads only what follows it.
            assert await monitor.join_room(room_id)
            joined = await next_event(memory_in)
            assert (joined.event_type, joined.subject_handle) == ("member_joined", "monitor")
            assert (await next_event(deploy_in)).event_type == "member_joined"
            await deploy.post_room_message(room_id, "monitor is in")
            assert (await next_event(monitor_in)).payload == "monitor is in"
            assert [e.payload for e in await monitor.replay_room(room_id)] == ["", "monitor is in"]
            assert (await next_event(memory_in)).payload == "monitor is in"
            assert memory_in.empty()  # the forged post never reached @memory's handler
            assert [e.payload for e in await memory.replay_room(room_id)] == [
                '{"decision": "roll back"}', "noted", "", "monitor is in"]
    finally:
        if spy.nc is not None:
            await spy.nc.close()
