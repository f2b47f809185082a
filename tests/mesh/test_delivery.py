"""Delivery guarantees on a real server: offline inboxes, redelivery, poison and garbage messages,
de-duplication, bounded concurrency, 1,000 concurrent sessions, ephemeral handles, reconnects."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

import nats
import nats.js.errors
import pytest

from mesh import Envelope, Message, NatsServer, Retry, encode_envelope
from mesh.constants import STREAM_NAME
from mesh.handles import durable_name, inbox_filter, inbox_subject
from mesh.sender import dedup_id
from tests.mesh.helpers import Factory, inbox, next_msg


async def stored_for(url: str, handle: str) -> int:
    """Messages currently stored in ``handle``'s inbox (unacked or undelivered)."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM_NAME, subjects_filter=inbox_filter(handle))
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


async def test_a_message_to_an_offline_agent_waits_and_is_delivered_when_it_returns(
    mesh_agent: Factory, nats_url: str
) -> None:
    memory = await mesh_agent("memory")
    await memory.close()  # registered, now offline
    sender = await mesh_agent("sender")
    assert (await sender.introspect("memory")).online is False
    opened = await sender.open_session("memory", "while you were out", trace_id="t-off")
    await sender.send(opened.session, "and this")
    assert await stored_for(nats_url, "memory") == 2

    back = await mesh_agent("memory", register=False)
    back_in = inbox(back)
    await back.register()
    got = [await next_msg(back_in), await next_msg(back_in)]
    assert sorted((m.sequence, m.payload, m.trace_id) for m in got) == [
        (1, "while you were out", "t-off"), (2, "and this", "t-off")]
    await back.resolve(opened.session, "seen")
    assert await stored_for(nats_url, "memory") == 0  # acked messages leave the work queue


async def test_a_handler_that_raises_is_logged_once_and_its_message_dropped(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker", register=False)
    seen: list[Message] = []

    @worker.on_message
    async def broken(msg: Message) -> None:
        seen.append(msg)
        if msg.payload != "fine":
            raise RuntimeError("bug in the handler")

    await worker.register()
    sender = await mesh_agent("sender")
    with caplog.at_level(logging.ERROR, logger="mesh.agent"):
        opened = await sender.open_session("worker", "secret-payload-text")
        for _ in range(200):  # terminated: gone from the work queue, so it can never come back
            if seen and await stored_for(nats_url, "worker") == 0:
                break
            await asyncio.sleep(0.02)
        marker = await sender.open_session("worker", "fine")
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
    assert [m.message_id for m in seen] == [opened.message_id, marker.message_id]  # delivered once, not again
    assert caplog.text.count("handler failed") == 1 and "dropped" in caplog.text
    assert "RuntimeError: bug in the handler" in caplog.text  # with its traceback
    assert "secret-payload-text" not in caplog.text  # payloads are never logged
    assert await stored_for(nats_url, "worker") == 0


async def test_a_handler_that_raises_retry_gets_the_message_again(mesh_agent: Factory,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    worker = await mesh_agent("worker", register=False)
    seen: list[tuple[Message, float]] = []
    done = asyncio.Event()

    @worker.on_message
    async def flaky(msg: Message) -> None:
        seen.append((msg, time.monotonic()))
        if len(seen) == 1:
            raise Retry(delay=0.3, reason="database busy")
        done.set()

    await worker.register()
    sender = await mesh_agent("sender")
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        opened = await sender.open_session("worker", "secret-payload-text")
        await asyncio.wait_for(done.wait(), 10)
    assert [m.message_id for m, _ in seen] == [opened.message_id, opened.message_id]
    assert seen[1][1] - seen[0][1] >= 0.25  # the delay it asked for
    assert "delivered again in 0.3s" in caplog.text
    assert "secret-payload-text" not in caplog.text


async def test_retry_on_error_redelivers_any_exception(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, retry_on_error=True)
    seen: list[Message] = []
    done = asyncio.Event()

    @worker.on_message
    async def flaky(msg: Message) -> None:
        seen.append(msg)
        if len(seen) == 1:
            raise OSError("disk hiccup")
        done.set()

    await worker.register()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "again please")
    await asyncio.wait_for(done.wait(), 10)
    assert [m.message_id for m in seen] == [opened.message_id, opened.message_id]


async def test_a_poison_message_is_given_up_after_max_deliver(mesh_agent: Factory, nats_url: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    worker = await mesh_agent("worker", register=False, max_deliver=2)
    attempts: dict[str, int] = {}
    good = asyncio.Event()

    @worker.on_message
    async def picky(msg: Message) -> None:
        attempts[msg.payload] = attempts.get(msg.payload, 0) + 1
        if msg.payload == "poison":
            raise Retry(delay=0.05)
        good.set()

    await worker.register()
    sender = await mesh_agent("sender")
    with caplog.at_level(logging.ERROR, logger="mesh.agent"):
        await sender.open_session("worker", "poison")
        for _ in range(200):
            if attempts.get("poison") == 2:
                break
            await asyncio.sleep(0.02)
        await sender.open_session("worker", "fine")
        await asyncio.wait_for(good.wait(), 10)
        for _ in range(100):  # terminated: gone from the work queue, so it can never come back
            if await stored_for(nats_url, "worker") == 0:
                break
            await asyncio.sleep(0.05)
    assert await stored_for(nats_url, "worker") == 0
    assert attempts == {"poison": 2, "fine": 1}
    assert "giving up (terminated)" in caplog.text


async def test_garbage_is_rejected_logged_and_the_agent_keeps_going(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker")
    worker_in = inbox(worker)
    nc = await nats.connect(nats_url)
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        await nc.jetstream().publish(inbox_subject("worker", "sender"), b"\x93not an envelope")
        await nc.close()
        sender = await mesh_agent("sender")
        opened = await sender.open_session("worker", "real")
        assert (await next_msg(worker_in)).message_id == opened.message_id
    assert "rejected undecodable message" in caplog.text
    assert worker_in.empty()
    assert await stored_for(nats_url, "worker") == 0  # terminated, not redelivered


async def test_a_duplicate_publish_is_stored_once(mesh_agent: Factory, nats_url: str) -> None:
    worker = await mesh_agent("worker")
    await worker.close()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "original")
    envelope = Envelope(
        message_id=opened.message_id, session_id=opened.session, from_handle="sender", to_handle="worker",
        payload="original", content_type="text/plain", sent_at=time.time(), type="session_open",
        trace_id=opened.trace_id, sequence=1,
    )
    nc = await nats.connect(nats_url)
    ack = await nc.jetstream().publish(inbox_subject("worker", "sender"), encode_envelope(envelope),
                                       headers={"Nats-Msg-Id": dedup_id("sender", opened.message_id)})
    await nc.close()
    assert ack.duplicate is True
    assert await stored_for(nats_url, "worker") == 1

    back = await mesh_agent("worker", register=False)
    back_in = inbox(back)
    await back.register()
    assert (await next_msg(back_in)).message_id == opened.message_id
    marker = await sender.open_session("worker", "marker")
    assert (await next_msg(back_in)).message_id == marker.message_id
    assert back_in.empty()


async def test_handlers_run_concurrently_up_to_max_in_flight_and_no_further(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, max_in_flight=8)
    active = peak = 0
    full = asyncio.Event()

    @worker.on_message
    async def slow(msg: Message) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 8:
            full.set()
        await asyncio.wait_for(full.wait(), 10)  # fails unless 8 handlers run at the same time
        active -= 1
        await worker.resolve(msg.session, "ok")

    await worker.register()
    client = await mesh_agent("client")
    replies = await asyncio.gather(*(client.request("worker", str(i), timeout=30) for i in range(40)))
    assert [r.payload for r in replies] == ["ok"] * 40
    assert peak == 8


async def test_sync_handlers_run_on_threads_concurrently(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, max_in_flight=4)
    seen: list[str] = []
    together = threading.Barrier(4, timeout=10)  # breaks (handler fails) unless all 4 run at once
    loop_thread = threading.current_thread()

    @worker.on_message
    def blocking(msg: Message) -> None:
        assert threading.current_thread() is not loop_thread
        together.wait()
        seen.append(msg.payload)

    await worker.register()
    sender = await mesh_agent("sender")
    for i in range(4):
        await sender.open_session("worker", str(i))
    for _ in range(500):
        if len(seen) == 4:
            break
        await asyncio.sleep(0.02)
    assert sorted(seen) == ["0", "1", "2", "3"]
    assert not together.broken


async def test_one_thousand_concurrent_sessions_without_loss(mesh_agent: Factory) -> None:
    memory = await mesh_agent("memory", register=False, max_in_flight=256)

    @memory.on_message
    async def echo(msg: Message) -> None:
        await memory.resolve(msg.session, f"echo:{msg.payload}")

    await memory.register()
    client = await mesh_agent("client", max_in_flight=256)
    client_in = inbox(client)
    n = 1000
    replies = await asyncio.gather(*(client.request("memory", f"q{i}", trace_id=f"t{i}", timeout=60)
                                     for i in range(n)))
    assert [r.payload for r in replies] == [f"echo:q{i}" for i in range(n)]
    assert [r.trace_id for r in replies] == [f"t{i}" for i in range(n)]
    assert len({r.session for r in replies}) == n
    # open_session path too: every resolve arrives at the opener's handler
    opened = await asyncio.gather(*(client.open_session("memory", f"o{i}") for i in range(n)))
    got = {(await next_msg(client_in)).session for _ in range(n)}
    assert got == {o.session for o in opened}


async def test_an_ephemeral_handle_is_removed_on_close(mesh_agent: Factory, nats_url: str) -> None:
    memory = await mesh_agent("memory")

    @memory.on_message
    async def answer(msg: Message) -> None:
        await memory.resolve(msg.session, "42")

    handle = f"cli-{uuid.uuid4().hex[:8]}"
    cli = await mesh_agent(handle, register=False)
    registered = await cli.register(ephemeral=True)
    assert registered.ephemeral
    assert (await memory.introspect(handle)).found
    assert (await cli.request("memory", "answer?", timeout=10)).payload == "42"
    await cli.close()
    assert not (await memory.introspect(handle)).found
    nc = await nats.connect(nats_url)
    with pytest.raises(nats.js.errors.NotFoundError):
        await nc.jetstream().consumer_info(STREAM_NAME, durable_name(handle))
    await nc.close()


async def test_discovery(mesh_agent: Factory) -> None:
    from mesh import CommandSpec, Manifest

    await mesh_agent("memory", manifest=Manifest(description="remembers", tags=("memory", "ops"),
                                                 capabilities=("recall",), domains=("ops",),
                                                 commands=(CommandSpec("ask", "ask"),), version="1"))
    deploy = await mesh_agent("deploy", manifest=Manifest(description="deploys", tags=("ops",),
                                                          capabilities=("deploy",)))
    gone = await mesh_agent("gone", manifest=Manifest(tags=("ops",), capabilities=("recall",)))
    await gone.close()

    info = await deploy.introspect("memory")
    assert info.found and info.online and info.manifest is not None
    assert info.manifest.description == "remembers"
    assert not (await deploy.introspect("nobody")).found
    assert (await deploy.introspect("gone")).online is False

    # Offline handles are left out unless asked for (as tailbus lists only connected agents).
    assert [e.handle for e in await deploy.list_handles()] == ["deploy", "memory"]
    everyone = await deploy.list_handles(online_only=False)
    assert [(e.handle, e.online) for e in everyone] == [("deploy", True), ("gone", False), ("memory", True)]
    assert [e.handle for e in await deploy.list_handles(tags=["memory"])] == ["memory"]

    matches = await deploy.find_handles(capabilities=["recall"], domains=["ops"], command_name="ask")
    assert [(m.handle, m.score) for m in matches] == [("memory", 150)]
    assert matches[0].match_reasons == ("capability:recall", "domain:ops", "command:ask")
    ranked = await deploy.find_handles(tags=["ops"], limit=2, online_only=False)
    assert [m.handle for m in ranked] == ["deploy", "gone"]
    assert [m.handle for m in await deploy.find_handles(tags=["ops"], limit=2)] == ["deploy", "memory"]
    assert [m.handle for m in await deploy.find_handles(capabilities=["recall"])] == ["memory"]
    offline = await deploy.find_handles(capabilities=["recall"], online_only=False)
    assert [(m.handle, m.online) for m in offline] == [("gone", False), ("memory", True)]


async def test_reconnects_after_a_server_restart_without_losing_durable_messages(
    mesh_agent: Factory, nats_server: NatsServer
) -> None:
    memory = await mesh_agent("memory", register=False)
    memory_in = inbox(memory)
    await memory.register()
    parked = await mesh_agent("parked")
    await parked.close()
    client = await mesh_agent("client")
    queued = [await client.open_session("parked", f"queued-{i}") for i in range(3)]

    await asyncio.to_thread(nats_server.stop)  # off the loop, so the clients see the disconnect
    for _ in range(200):
        if not memory.is_connected and not client.is_connected:
            break
        await asyncio.sleep(0.02)
    assert not memory.is_connected and not client.is_connected
    await asyncio.to_thread(nats_server.start)
    for _ in range(400):
        if memory.is_connected and client.is_connected:
            break
        await asyncio.sleep(0.05)
    assert memory.is_connected and client.is_connected

    opened = await client.open_session("memory", "after restart")
    assert (await next_msg(memory_in, 20)).message_id == opened.message_id
    back = await mesh_agent("parked", register=False)
    back_in = inbox(back)
    await back.register()
    got = {(await next_msg(back_in)).message_id for _ in range(3)}
    assert got == {o.message_id for o in queued}


async def test_re_registering_updates_the_durable_consumer_in_place(mesh_agent: Factory, nats_url: str) -> None:
    first = await mesh_agent("worker", max_in_flight=8, ack_wait=30, max_deliver=5)
    await first.close()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "kept across the update")
    second = await mesh_agent("worker", register=False, max_in_flight=512, ack_wait=2, max_deliver=3)
    second_in = inbox(second)
    await second.register()
    nc = await nats.connect(nats_url)
    config = (await nc.jetstream().consumer_info(STREAM_NAME, durable_name("worker"))).config
    await nc.close()
    assert (config.max_ack_pending, config.ack_wait, config.max_deliver) == (512, 2.0, 3)
    assert (await next_msg(second_in)).message_id == opened.message_id


async def test_a_slow_handler_is_kept_alive_not_redelivered(mesh_agent: Factory, nats_url: str) -> None:
    worker = await mesh_agent("worker", register=False, ack_wait=0.5)
    deliveries: list[str] = []
    finished = asyncio.Event()

    @worker.on_message
    async def slow(msg: Message) -> None:
        deliveries.append(msg.message_id)
        await asyncio.sleep(1.5)  # three times ack_wait: in-progress acks keep it ours
        finished.set()

    await worker.register()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "take your time")
    await asyncio.wait_for(finished.wait(), 10)
    for _ in range(100):
        if await stored_for(nats_url, "worker") == 0:
            break
        await asyncio.sleep(0.05)
    assert deliveries == [opened.message_id]
    assert await stored_for(nats_url, "worker") == 0


async def test_close_lets_running_handlers_finish_and_ack(mesh_agent: Factory, nats_url: str) -> None:
    worker = await mesh_agent("worker", register=False)
    started, release = asyncio.Event(), asyncio.Event()

    @worker.on_message
    async def busy(msg: Message) -> None:
        started.set()
        await release.wait()

    await worker.register()
    sender = await mesh_agent("sender")
    await sender.open_session("worker", "finish me")
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(worker.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the handler
    release.set()
    await asyncio.wait_for(closing, 10)
    assert await stored_for(nats_url, "worker") == 0  # acked before the connection closed
    assert (await sender.introspect("worker")).online is False
