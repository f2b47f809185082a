"""Creates (idempotently) the stream, KV buckets and per-handle durable consumers the mesh uses.

* Stream ``MESH_INBOX``: subjects ``mesh.inbox.>`` (``mesh.inbox.<to>.<from>``), file storage, work-queue retention (a message is
  removed once its consumer acks it), duplicate window 2 min, max age 7 days, max 1 GiB with
  discard-new (a full stream refuses publishes with an error, it never drops stored messages).
* One durable push consumer per registered handle: ``inbox_<handle>``, filter
  ``mesh.inbox.<handle>.*``, delivered to ``mesh.deliver.<handle>`` in queue group ``<handle>``,
  explicit ack, ``MaxAckPending = max_in_flight``, ``MaxDeliver``, ``AckWait``.
* KV buckets ``mesh_registry`` (no expiry), ``mesh_sessions`` (7 day expiry) and ``mesh_rooms``
  (30 days after a room's last change).
* Stream ``MESH_ROOMS``: subjects ``mesh.room.>`` (``mesh.room.<member>.<room_id>.<poster>``, one copy
  per member), file storage, limits retention (copies stay for replay after they are acked), duplicate
  window 2 min, max age 30 days, max 1 GiB with discard-new.
* Per registered handle, a durable push consumer ``rooms_<handle>`` on it, filter
  ``mesh.room.<handle>.>``, delivered to the same ``mesh.deliver.<handle>`` as the inbox; and, during a
  ``replay_room``, a pull consumer ``replay_<handle>`` filtered on one room's copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from .constants import (
    DUPLICATE_WINDOW,
    INBOX_PREFIX,
    REGISTRY_BUCKET,
    ROOM_PREFIX,
    ROOMS_BUCKET,
    ROOMS_MAX_AGE,
    ROOMS_STREAM,
    ROOMS_STREAM_MAX_BYTES,
    SESSIONS_BUCKET,
    SESSIONS_MAX_AGE,
    STREAM_MAX_AGE,
    STREAM_MAX_BYTES,
    STREAM_NAME,
)
from .handles import deliver_subject, durable_name, inbox_filter, room_filter, rooms_durable_name

__all__ = [
    "ensure_bucket",
    "ensure_consumer",
    "ensure_rooms_consumer",
    "ensure_rooms_stream",
    "ensure_stream",
    "latest_entries",
    "remove_inbox",
]

_BUCKETS: dict[str, tuple[str, float | None]] = {
    REGISTRY_BUCKET: ("mesh handle registry", None),
    SESSIONS_BUCKET: ("mesh session state", SESSIONS_MAX_AGE),
    ROOMS_BUCKET: ("mesh room records", ROOMS_MAX_AGE),
}

log = logging.getLogger(__name__)


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the ``MESH_INBOX`` stream unless it exists (an existing stream is used as is)."""
    try:
        await js.stream_info(STREAM_NAME)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=STREAM_NAME,
        description="mesh agent inboxes (mesh.inbox.<to>.<from>)",
        subjects=[INBOX_PREFIX + ">"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=STREAM_MAX_AGE,
        max_bytes=STREAM_MAX_BYTES,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(STREAM_NAME)  # lost a creation race: fine if it exists now


async def ensure_rooms_stream(js: JetStreamContext) -> None:
    """Create the ``MESH_ROOMS`` stream unless it exists (an existing stream is used as is)."""
    try:
        await js.stream_info(ROOMS_STREAM)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = StreamConfig(
        name=ROOMS_STREAM,
        description="mesh room events, one copy per member (mesh.room.<member>.<room_id>.<poster>)",
        subjects=[ROOM_PREFIX + ">"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=ROOMS_MAX_AGE,
        max_bytes=ROOMS_STREAM_MAX_BYTES,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(ROOMS_STREAM)


async def ensure_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """Open the KV bucket, creating it (file storage, history 1) on first use."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    description, ttl = _BUCKETS.get(bucket, (None, None))
    try:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, description=description, history=1, ttl=ttl,
                           storage=StorageType.FILE, direct=True)
        )
    except nats.js.errors.BadRequestError:
        return await js.key_value(bucket)


async def ensure_consumer(
    js: JetStreamContext,
    handle: str,
    *,
    max_in_flight: int,
    max_deliver: int,
    ack_wait: float,
) -> None:
    """Create the handle's durable consumer, or update it in place (its delivery state is kept)."""
    name = durable_name(handle)
    config = ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"mesh inbox of {handle}",
        filter_subject=inbox_filter(handle),
        deliver_subject=deliver_subject(handle),
        deliver_group=handle,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_in_flight,
    )
    await js.add_consumer(STREAM_NAME, config)


async def ensure_rooms_consumer(js: JetStreamContext, handle: str, *, max_in_flight: int, max_deliver: int,
                                ack_wait: float) -> None:
    """Create (or update in place) the handle's durable consumer of its room events.

    Deliver-all: a handle that registers for the first time gets the copies members sent it before.
    """
    name = rooms_durable_name(handle)
    await js.add_consumer(ROOMS_STREAM, ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"mesh room events of {handle}",
        filter_subject=room_filter(handle),
        deliver_subject=deliver_subject(handle),
        deliver_group=handle,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_in_flight,
    ))


async def remove_inbox(js: JetStreamContext, handle: str, *, rooms: bool = False) -> None:
    """Delete the handle's durable consumers (the rooms consumer too when ``rooms``) and purge what is
    left in its inbox (ephemeral handles).

    The purge (which needs the ``$JS.API.STREAM.PURGE.MESH_INBOX`` permission, one that lets a user
    purge any inbox, so locked-down servers do not grant it) runs only when messages are left. Its
    room copies are left to expire with the rooms stream, for the same reason.
    """
    try:
        info = await js.consumer_info(STREAM_NAME, durable_name(handle))
    except nats.js.errors.NotFoundError:
        info = None
    if info is not None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(STREAM_NAME, durable_name(handle))
        if info.num_pending or info.num_ack_pending:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.purge_stream(STREAM_NAME, subject=inbox_filter(handle))
    if rooms:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(ROOMS_STREAM, rooms_durable_name(handle))


async def latest_entries(js: JetStreamContext, bucket: str, key_filter: str = ">", *,
                         concurrency: int = 32) -> list[KeyValue.Entry]:
    """The latest entry (``key``, ``value``, ``revision``) of every key of ``bucket`` matching
    ``key_filter`` (KV key tokens, ``*``/``>`` wildcards); deleted, purged and expired keys are left out.
    No particular order.

    Lists the subjects of the bucket's stream (``$JS.API.STREAM.INFO.KV_<bucket>`` with a subjects filter;
    stream ``KV_<bucket>`` and subjects ``$KV.<bucket>.<key>`` are the NATS KV naming of ADR-8), then reads
    each key's last message by direct get (``$JS.API.DIRECT.GET.KV_<bucket>``, ``concurrency`` at a time).
    A KV watch is not used for listings: nats-py 2.16 ends a watch's initial values when a delivered
    message reports nothing more pending, which concurrent updates (heartbeats) make happen early, so a
    watch listing can miss keys or return none (seen as live handles missing from ``find_handles``).
    One page of subjects (the server's limit, 100,000) is read. Raises what nats-py raises.
    """
    prefix, stream = f"$KV.{bucket}.", f"KV_{bucket}"
    info = await js.stream_info(stream, subjects_filter=prefix + key_filter)
    gate = asyncio.Semaphore(concurrency)

    async def read(subject: str) -> KeyValue.Entry | None:
        async with gate:
            try:
                msg = await js.get_msg(stream, subject=subject, direct=True)
            except nats.js.errors.NotFoundError:  # removed since the listing
                return None
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers:
            return None  # a delete or purge, or the server's marker of an expired key
        return KeyValue.Entry(bucket=bucket, key=subject[len(prefix):], value=msg.data, revision=msg.seq,
                              delta=None, created=None, operation=None)

    found = await asyncio.gather(*(read(subject) for subject in info.state.subjects or {}))
    return [entry for entry in found if entry is not None]
