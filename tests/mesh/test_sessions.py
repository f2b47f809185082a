"""Sessions on a real server: open -> reply -> resolve, request(), trace ids, session rules, errors."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import nats
import pytest

from mesh import (
    AsyncAgent,
    Envelope,
    HandleNotFound,
    HandleTaken,
    InvalidHandle,
    MeshError,
    MeshTimeout,
    Message,
    NotRegistered,
    PayloadTooLarge,
    SessionClosed,
    SessionNotFound,
    encode_envelope,
)
from mesh.handles import inbox_subject
from tests.mesh.helpers import Factory, eventually, inbox, next_msg


async def test_open_reply_resolve_round_trip(mesh_agent: Factory) -> None:
    deploy = await mesh_agent("deploy")
    memory = await mesh_agent("memory")
    deploy_in, memory_in = inbox(deploy), inbox(memory)

    opened = await deploy.open_session("memory", '{"q": 1}', content_type="application/json", trace_id="t-42")
    assert opened.trace_id == "t-42"
    first = await next_msg(memory_in)
    assert (first.session, first.message_type, first.from_handle, first.to_handle) == (
        opened.session, "session_open", "deploy", "memory")
    assert (first.payload, first.content_type, first.message_id, first.sequence) == (
        '{"q": 1}', "application/json", opened.message_id, 1)
    assert first.sent_at > 1_600_000_000

    sent = await memory.send(opened.session, "working on it")
    reply = await next_msg(deploy_in)
    assert (reply.message_type, reply.payload, reply.message_id, reply.sequence) == (
        "message", "working on it", sent.message_id, 2)

    await deploy.send(opened.session, "more")  # either participant may send
    more = await next_msg(memory_in)
    assert (more.payload, more.sequence) == ("more", 3)

    resolved = await memory.resolve(opened.session, "done")
    final = await next_msg(deploy_in)
    assert (final.message_type, final.payload, final.message_id, final.sequence) == (
        "session_resolve", "done", resolved.message_id, 4)
    assert {m.trace_id for m in (first, reply, more, final)} == {"t-42"}


async def test_request_returns_the_resolve_of_an_agent_that_answers_at_once(mesh_agent: Factory) -> None:
    memory = await mesh_agent("memory")
    client = await mesh_agent("client")
    client_in = inbox(client)

    @memory.on_message
    async def answer(msg: Message) -> None:
        await memory.resolve(msg.session, msg.payload.upper(), content_type="text/x-upper")

    reply = await client.request("memory", "what happened?", trace_id="trace-r", timeout=10)
    assert (reply.message_type, reply.payload, reply.content_type) == ("session_resolve", "WHAT HAPPENED?",
                                                                       "text/x-upper")
    assert (reply.from_handle, reply.to_handle, reply.trace_id) == ("memory", "client", "trace-r")
    with pytest.raises(SessionClosed):
        await client.send(reply.session, "too late")
    assert client_in.empty()  # the waiter consumed the answer; on_message never saw it


async def test_request_returns_the_first_reply_and_later_ones_go_to_the_handler(mesh_agent: Factory) -> None:
    memory = await mesh_agent("memory")
    client = await mesh_agent("client")
    client_in = inbox(client)

    @memory.on_message
    async def answer(msg: Message) -> None:
        if msg.message_type == "session_open":
            await memory.send(msg.session, "first")
            await memory.send(msg.session, "second")
            await memory.resolve(msg.session, "done")

    reply = await client.request("memory", "go", timeout=10)
    assert (reply.payload, reply.message_type, reply.sequence) == ("first", "message", 2)
    later = [await next_msg(client_in), await next_msg(client_in)]
    assert sorted((m.sequence, m.payload) for m in later) == [(3, "second"), (4, "done")]


async def test_trace_id_is_generated_once_and_carried_by_every_message(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    a_in, b_in = inbox(a), inbox(b)
    opened = await a.open_session("beta", "hi")
    assert uuid.UUID(opened.trace_id).version == 4
    got = await next_msg(b_in)
    await b.send(opened.session, "x")
    await b.resolve(opened.session)
    replies = [await next_msg(a_in), await next_msg(a_in)]
    assert {got.trace_id, *(m.trace_id for m in replies)} == {opened.trace_id}
    other = await a.open_session("beta", "again")
    assert other.trace_id != opened.trace_id


async def test_only_participants_may_send_or_resolve(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    b_in = inbox(b)
    intruder = await mesh_agent("intruder")
    opened = await a.open_session("beta", "private")
    # Each participant keeps its own record of the session; to anyone else it does not exist.
    with pytest.raises(SessionNotFound) as info:
        await intruder.send(opened.session, "let me in")
    assert info.value.session == opened.session
    with pytest.raises(SessionNotFound):
        await intruder.resolve(opened.session)
    await next_msg(b_in)  # beta learns of the session from its open
    await b.send(opened.session, "fine")  # the participants can
    await a.send(opened.session, "fine too")


async def test_a_resolved_session_accepts_nothing_more(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    a_in, b_in = inbox(a), inbox(b)
    opened = await a.open_session("beta", "hi")
    await next_msg(b_in)
    await b.resolve(opened.session, "bye")
    assert (await next_msg(a_in)).message_type == "session_resolve"  # alpha knows once the resolve arrived
    for call in (a.send(opened.session, "x"), b.send(opened.session, "y"), a.resolve(opened.session),
                 b.resolve(opened.session, "again")):
        with pytest.raises(SessionClosed) as info:
            await call
        assert info.value.session == opened.session


async def test_a_message_that_crosses_the_resolve_is_dropped_by_the_receiver(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    b_in = inbox(b)
    opened = await a.open_session("beta", "hi")
    await next_msg(b_in)
    resolved = await b.resolve(opened.session, "bye")
    assert resolved.sequence == 2
    # What alpha's SDK would publish if it sent before the resolve reached it: sequence 2 as well.
    crossing = Envelope(message_id=str(uuid.uuid4()), session_id=opened.session, from_handle="alpha",
                        to_handle="beta", payload="one more thing", content_type="text/plain", sent_at=time.time(),
                        type="message", trace_id=opened.trace_id, sequence=2)
    nc = await nats.connect(nats_url)
    with caplog.at_level(logging.INFO, logger="mesh.agent"):
        await nc.jetstream().publish(inbox_subject("beta", "alpha"), encode_envelope(crossing))
        await nc.close()
        assert await eventually(lambda: _logged(caplog, f"dropped message {crossing.message_id}"))
    assert b_in.empty()
    assert "sent after or across the resolve by this agent" in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


async def test_unknown_session_is_refused(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    with pytest.raises(SessionNotFound) as info:
        await a.send(str(uuid.uuid4()), "x")
    assert isinstance(info.value, MeshError)


async def test_never_registered_handle_is_not_found_at_once(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    with pytest.raises(HandleNotFound) as info:
        await a.open_session("ghost", "anyone?")
    assert info.value.handle == "ghost"
    with pytest.raises(HandleNotFound):
        await a.request("ghost", "anyone?", timeout=1)


async def test_invalid_handles_are_refused_before_nats(mesh_agent: Factory, nats_url: str) -> None:
    with pytest.raises(InvalidHandle) as info:
        AsyncAgent("Not-Valid", servers=nats_url)
    assert info.value.handle == "Not-Valid"
    a = await mesh_agent("alpha")
    for bad in ("UPPER", "mesh.inbox.x", "", "x" * 64, "a b"):
        with pytest.raises(InvalidHandle):
            await a.open_session(bad, "hi")
    with pytest.raises(InvalidHandle):
        await a.introspect("has*star")


async def test_payload_limits(mesh_agent: Factory) -> None:
    small = await mesh_agent("small", max_payload=100)
    peer = await mesh_agent("peer")
    peer_in = inbox(peer)
    with pytest.raises(PayloadTooLarge) as info:
        await small.open_session("peer", "é" * 51)  # 102 UTF-8 bytes
    assert (info.value.size, info.value.limit) == (102, 100)
    opened = await small.open_session("peer", "x" * 100)
    with pytest.raises(PayloadTooLarge):
        await small.send(opened.session, "x" * 101)
    with pytest.raises(PayloadTooLarge):
        await small.resolve(opened.session, "x" * 101)
    await small.send(opened.session, "still open")  # the refused sends consumed nothing

    big = await mesh_agent("big")
    with pytest.raises(PayloadTooLarge) as info:
        await big.open_session("peer", "x" * (1024 * 1024 + 1))
    assert info.value.limit == 1024 * 1024
    await big.open_session("peer", "y" * (1024 * 1024))  # exactly the default limit goes through
    sizes = sorted([len((await next_msg(peer_in)).payload) for _ in range(3)])
    assert sizes == [10, 100, 1024 * 1024]


async def test_request_times_out_with_mesh_timeout(mesh_agent: Factory) -> None:
    silent = await mesh_agent("silent")

    @silent.on_message
    async def ignore(msg: Message) -> None:
        return None

    client = await mesh_agent("client")
    with pytest.raises(MeshTimeout) as info:
        await client.request("silent", "hello?", timeout=0.3)
    assert info.value.timeout == 0.3
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, MeshError)


async def test_sessions_need_a_registered_agent(mesh_agent: Factory) -> None:
    await mesh_agent("peer")
    loose = await mesh_agent("loose", register=False)
    with pytest.raises(NotRegistered):
        await loose.open_session("peer", "hi")
    with pytest.raises(NotRegistered):
        await loose.request("peer", "hi", timeout=1)
    assert (await loose.introspect("peer")).found  # discovery works without registering


async def test_a_live_handle_cannot_be_claimed_twice(mesh_agent: Factory) -> None:
    await mesh_agent("memory")
    second = await mesh_agent("memory", register=False)
    with pytest.raises(HandleTaken) as info:
        await second.register()
    assert info.value.handle == "memory"
    assert not second.is_registered


async def test_a_closed_handle_can_be_claimed_again_at_once(mesh_agent: Factory) -> None:
    first = await mesh_agent("memory")
    await first.close()
    again = await mesh_agent("memory")
    assert again.is_registered


async def test_a_crashed_owner_is_replaced_after_its_heartbeat_expires(mesh_agent: Factory) -> None:
    crashed = await mesh_agent("worker", heartbeat_interval=0.1)
    assert crashed._presence is not None
    await crashed._presence.stop_heartbeat()  # stop heartbeating without a clean close, like a hung process
    successor = await mesh_agent("worker", register=False)
    for _ in range(50):
        try:
            await successor.register()
            break
        except HandleTaken:
            await asyncio.sleep(0.05)
    assert successor.is_registered


async def test_close_fails_pending_requests(mesh_agent: Factory) -> None:
    await mesh_agent("silent")
    client = await mesh_agent("client")
    pending = asyncio.create_task(client.request("silent", "hello", timeout=30))
    await asyncio.sleep(0.2)
    await client.close()
    with pytest.raises(MeshError, match="closed"):
        await pending


async def test_listings_see_every_live_handle_while_others_heartbeat(mesh_agent: Factory) -> None:
    """nats-py's KV watch ends its initial values early under concurrent updates; listings must not."""
    busy = [await mesh_agent(f"busy-{i}", heartbeat_interval=0.05) for i in range(8)]
    probe = await mesh_agent("probe")
    handles = {a.handle for a in busy} | {"probe"}
    for _ in range(60):
        listed = await probe.list_handles()
        assert {e.handle for e in listed if e.online} == handles
        found = await probe.find_handles(limit=0)
        assert {m.handle for m in found} == handles
