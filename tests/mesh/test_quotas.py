"""Quotas (issue 14, item 4): a sender can keep at most ``per_sender_messages`` messages waiting in one
recipient's inbox lane; its next send waits for room (back-pressure) and then raises InboxFull, while
every other sender goes on. Every stream and bucket has a byte limit and a largest record."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.js.errors
import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from mesh import InboxFull, Message, Quotas
from mesh.constants import (
    INBOX_PREFIX,
    PRIORITY_STREAM,
    REGISTRY_BUCKET,
    ROOMS_BUCKET,
    ROOMS_STREAM,
    SESSIONS_BUCKET,
    STREAM_NAME,
)
from tests.mesh.helpers import Factory, inbox, next_msg

SMALL = Quotas(per_sender_messages=5, full_wait=0.5)


async def test_a_sender_over_its_quota_is_refused_and_nobody_else(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", quotas=SMALL)  # first: it creates the streams, with these quotas
    await worker.close()  # offline: messages wait
    flooder = await mesh_agent("flooder", quotas=SMALL)
    other = await mesh_agent("other", quotas=SMALL)
    for i in range(5):
        await flooder.open_session("worker", f"flood {i}")
    started = time.monotonic()
    with pytest.raises(InboxFull) as err:
        await flooder.open_session("worker", "one too many")
    assert time.monotonic() - started >= 0.5  # it waited for room first
    assert (err.value.handle, err.value.sender, err.value.reason) == ("worker", "flooder", "per_sender")
    await other.open_session("worker", "still gets through")  # another sender is not affected

    back = await mesh_agent("worker", register=False, quotas=SMALL)
    back_in = inbox(back)
    await back.register()
    got = sorted([(await next_msg(back_in)).payload for _ in range(6)])
    assert got == sorted([f"flood {i}" for i in range(5)] + ["still gets through"])
    await flooder.open_session("worker", "room again")  # taken: the flooder may send again
    assert (await next_msg(back_in)).payload == "room again"


async def test_a_full_inbox_is_waited_on_while_the_recipient_takes_messages(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, max_in_flight=1, quotas=Quotas(per_sender_messages=3))
    seen: list[str] = []

    @worker.on_message
    async def slow(msg: Message) -> None:
        await asyncio.sleep(0.1)
        seen.append(msg.payload)

    await worker.register()
    sender = await mesh_agent("sender")
    for i in range(12):  # four times the quota: each send waits for the recipient to take one
        await sender.open_session("worker", f"m{i}")
    for _ in range(100):
        if len(seen) == 12:
            break
        await asyncio.sleep(0.1)
    assert sorted(seen) == sorted(f"m{i}" for i in range(12))


async def test_every_stream_and_bucket_has_byte_limits(mesh_agent: Factory, nats_url: str) -> None:
    await mesh_agent("worker")
    quotas = Quotas()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        inbox_cfg = (await js.stream_info(STREAM_NAME)).config
        assert (inbox_cfg.max_bytes, inbox_cfg.max_msg_size, inbox_cfg.max_msgs_per_subject) == (
            quotas.inbox_max_bytes, quotas.message_max_bytes, quotas.per_sender_messages)
        assert inbox_cfg.discard_new_per_subject
        prio_cfg = (await js.stream_info(PRIORITY_STREAM)).config
        assert (prio_cfg.max_bytes, prio_cfg.max_msg_size) == (quotas.priority_max_bytes,
                                                               quotas.priority_message_max_bytes)
        rooms_cfg = (await js.stream_info(ROOMS_STREAM)).config
        assert (rooms_cfg.max_bytes, rooms_cfg.max_msg_size) == (quotas.rooms_max_bytes, quotas.message_max_bytes)
        for bucket, total, largest in ((REGISTRY_BUCKET, quotas.registry_max_bytes, quotas.registry_record_max_bytes),
                                       (SESSIONS_BUCKET, quotas.sessions_max_bytes, quotas.session_record_max_bytes),
                                       (ROOMS_BUCKET, quotas.room_records_max_bytes, quotas.room_record_max_bytes)):
            cfg = (await js.stream_info(f"KV_{bucket}")).config
            assert (cfg.max_bytes, cfg.max_msg_size) == (total, largest), bucket
        kv = await js.key_value(SESSIONS_BUCKET)
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
            await kv.put("worker.junk", b"x" * (quotas.session_record_max_bytes + 1))
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
            await js.publish(f"{INBOX_PREFIX}worker.flooder", b"x" * (quotas.message_max_bytes + 1))
    finally:
        await nc.close()


async def test_a_stream_made_without_quotas_gets_them(nats_url: str, mesh_agent: Factory) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM_NAME, subjects=[INBOX_PREFIX + ">"],
                                     retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE))
    await mesh_agent("worker")
    cfg = (await js.stream_info(STREAM_NAME)).config
    await nc.close()
    assert cfg.max_msgs_per_subject == Quotas().per_sender_messages and cfg.discard_new_per_subject
    assert cfg.max_bytes == Quotas().inbox_max_bytes


def test_quotas_are_checked() -> None:
    with pytest.raises(ValueError, match="per_sender_messages"):
        Quotas(per_sender_messages=0)
    with pytest.raises(ValueError, match="full_wait"):
        Quotas(full_wait=-1)
    assert Quotas().per_sender_bytes == 512 * (1024 * 1024 + 64 * 1024)
