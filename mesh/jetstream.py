"""Creates (idempotently) the streams, KV buckets and per-handle durable consumers the mesh uses.

* Stream ``MESH_INBOX`` (normal lane): subjects ``mesh.inbox.>`` (``mesh.inbox.<to>.<from>``); stream
  ``MESH_PRIORITY`` (priority lane): subjects ``mesh.prio.>``. Both: file storage, work-queue retention
  (a message is removed once its consumer acks it), duplicate window 2 min, max age 7 days, at most
  ``Quotas.per_sender_messages`` per subject, that is per (recipient, sender) pair, with discard-new per
  subject (that sender's publish is refused, nobody else's), a largest message and a total, discard new
  (a full stream refuses publishes with an error, it never drops stored messages).
* Per registered handle, durable push consumers ``inbox_<handle>`` (filter ``mesh.inbox.<handle>.*``) and
  ``priority_<handle>`` (filter ``mesh.prio.<handle>.*``), delivered to the owner's own subject
  ``mesh.deliver.<handle>.<owner>``, explicit ack, ``MaxAckPending = max_in_flight``, ``MaxDeliver``,
  ``AckWait``. A consumer another owner left (another deliver subject) is deleted and made anew: its
  deliveries and acks are void, and what it had not acknowledged is delivered to the new owner at once.
* KV buckets ``mesh_registry`` (no expiry), ``mesh_sessions`` (7 day expiry) and ``mesh_rooms`` (30 days
  after a room's last change), each with a total and a largest record.
* Stream ``MESH_ROOMS``: subjects ``mesh.room.>`` (``mesh.room.<member>.<room_id>.<poster>``, one copy per
  member), file storage, limits retention (copies stay for replay after they are acked), duplicate window
  2 min, max age 30 days, a largest message and a total, discard new.
* Per registered handle, a durable push consumer ``rooms_<handle>`` on it, filter ``mesh.room.<handle>.>``,
  delivered to the same subject as the inbox; and, during a ``replay_room``, a pull consumer
  ``replay_<handle>`` filtered on one room's copies.

Every stream and bucket is created with ``replicas`` copies (1 on a single server, 3 on a cluster); an
existing one is used as is, except that one made without quotas (an earlier version) gets them, and one
with fewer replicas than asked for is scaled up, when the server's permissions allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, replace

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from .connection import Denials
from .constants import (
    DUPLICATE_WINDOW,
    INBOX_PREFIX,
    PRIORITY_PREFIX,
    PRIORITY_STREAM,
    REGISTRY_BUCKET,
    REPLICAS_ENV,
    ROOM_PREFIX,
    ROOMS_BUCKET,
    ROOMS_MAX_AGE,
    ROOMS_STREAM,
    SESSIONS_BUCKET,
    SESSIONS_MAX_AGE,
    STREAM_MAX_AGE,
    STREAM_NAME,
)
from .errors import MeshError
from .handles import durable_name, inbox_filter, priority_durable_name, priority_filter
from .quotas import Quotas

__all__ = [
    "MAX_REPLICAS",
    "ConsumerSpec",
    "consumer_exists",
    "ensure_bucket",
    "ensure_consumer",
    "ensure_inbox_streams",
    "ensure_rooms_stream",
    "latest_entries",
    "remove_inbox",
    "replicas_from_env",
]

log = logging.getLogger(__name__)

#: The most replicas a JetStream stream may have.
MAX_REPLICAS = 5


def replicas_from_env() -> int:
    """``$MESH_REPLICAS`` (1..5), else 1; raises ValueError naming the variable for anything else."""
    raw = os.environ.get(REPLICAS_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${REPLICAS_ENV} must be an integer from 1 to {MAX_REPLICAS}, got {raw!r}") from None
    if not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"${REPLICAS_ENV} must be from 1 to {MAX_REPLICAS}, got {value}")
    return value


async def ensure_inbox_streams(js: JetStreamContext, quotas: Quotas, *, replicas: int,
                               denials: Denials | None = None) -> None:
    """Create ``MESH_INBOX`` and ``MESH_PRIORITY`` unless they exist (see the module docstring)."""
    for name, prefix, lane, max_bytes, max_msg in (
        (STREAM_NAME, INBOX_PREFIX, "normal", quotas.inbox_max_bytes, quotas.message_max_bytes),
        (PRIORITY_STREAM, PRIORITY_PREFIX, "priority", quotas.priority_max_bytes, quotas.priority_message_max_bytes),
    ):
        await _ensure_stream(js, StreamConfig(
            name=name,
            description=f"mesh inboxes, {lane} lane ({prefix}<to>.<from>)",
            subjects=[prefix + ">"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            discard_new_per_subject=True,
            max_msgs_per_subject=quotas.per_sender_messages,
            max_msg_size=max_msg,
            max_age=STREAM_MAX_AGE,
            max_bytes=max_bytes,
            duplicate_window=DUPLICATE_WINDOW,
            num_replicas=replicas,
        ), denials)


async def ensure_rooms_stream(js: JetStreamContext, quotas: Quotas, *, replicas: int,
                              denials: Denials | None = None) -> None:
    """Create the ``MESH_ROOMS`` stream unless it exists (see the module docstring)."""
    await _ensure_stream(js, StreamConfig(
        name=ROOMS_STREAM,
        description="mesh room events, one copy per member (mesh.room.<member>.<room_id>.<poster>)",
        subjects=[ROOM_PREFIX + ">"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=ROOMS_MAX_AGE,
        max_bytes=quotas.rooms_max_bytes,
        max_msg_size=quotas.message_max_bytes,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
    ), denials)


def _bucket_config(bucket: str, quotas: Quotas, replicas: int) -> KeyValueConfig:
    if bucket == REGISTRY_BUCKET:
        return KeyValueConfig(bucket=bucket, description="mesh handle registry", history=1,
                              max_bytes=quotas.registry_max_bytes, max_value_size=quotas.registry_record_max_bytes,
                              storage=StorageType.FILE, direct=True, replicas=replicas)
    if bucket == SESSIONS_BUCKET:
        return KeyValueConfig(bucket=bucket, description="mesh session records (<owner>.<session>)", history=1,
                              ttl=SESSIONS_MAX_AGE, max_bytes=quotas.sessions_max_bytes,
                              max_value_size=quotas.session_record_max_bytes, storage=StorageType.FILE,
                              direct=True, replicas=replicas)
    if bucket == ROOMS_BUCKET:
        return KeyValueConfig(bucket=bucket, description="mesh room records", history=1, ttl=ROOMS_MAX_AGE,
                              max_bytes=quotas.room_records_max_bytes, max_value_size=quotas.room_record_max_bytes,
                              storage=StorageType.FILE, direct=True, replicas=replicas)
    raise ValueError(f"unknown mesh bucket {bucket!r}")


async def ensure_bucket(js: JetStreamContext, bucket: str, quotas: Quotas, *, replicas: int,
                        denials: Denials | None = None) -> KeyValue:
    """Open the KV bucket, creating it (file storage, history 1, the quotas' limits) on first use; an
    existing bucket without a byte limit (an earlier version) gets the limits."""
    config = _bucket_config(bucket, quotas, replicas)
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            return await js.key_value(bucket)  # lost a creation race
    info = await js.stream_info(f"KV_{bucket}")
    await _reconcile(js, info.config, max_bytes=config.max_bytes, max_msg_size=config.max_value_size,
                     per_subject=None, replicas=replicas, denials=denials)
    return kv


async def _ensure_stream(js: JetStreamContext, config: StreamConfig, denials: Denials | None) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(config.name)  # lost a creation race: fine if it exists now
    await _reconcile(js, info.config, max_bytes=config.max_bytes, max_msg_size=config.max_msg_size,
                     per_subject=config.max_msgs_per_subject, replicas=config.num_replicas or 1, denials=denials)


def _unset(value: int | None) -> bool:
    return value is None or value <= 0


async def _reconcile(js: JetStreamContext, current: StreamConfig, *, max_bytes: int | None, max_msg_size: int | None,
                     per_subject: int | None, replicas: int, denials: Denials | None) -> None:
    """Give a stream made without quotas (an earlier version) the quotas, and scale its replicas up; an
    existing stream's own limits are otherwise left as its creator set them. A server whose permissions do
    not allow the update leaves it as it is (a warning says what is missing)."""
    changes: dict[str, object] = {}
    if _unset(current.max_bytes) and max_bytes:
        changes["max_bytes"] = max_bytes
    if _unset(current.max_msg_size) and max_msg_size:
        changes["max_msg_size"] = max_msg_size
    if per_subject is not None and per_subject > 0 and _unset(current.max_msgs_per_subject):
        changes.update(max_msgs_per_subject=per_subject, discard=DiscardPolicy.NEW, discard_new_per_subject=True)
    if (current.num_replicas or 1) < replicas:
        changes["num_replicas"] = replicas
    if not changes:
        return
    name = current.name
    updated = replace(current, **changes)  # type: ignore[arg-type]
    try:
        update = js.update_stream(updated)
        if denials is not None:
            await denials.guard(update, "publish", [f"$JS.API.STREAM.UPDATE.{name}"])
        else:
            await update
    except (nats.errors.Error, MeshError, TimeoutError) as exc:  # any refusal leaves the stream as it was
        log.warning("mesh: stream %s needs %s but could not be updated (%s: %s); it keeps its settings", name,
                    ", ".join(sorted(changes)), type(exc).__name__, exc)
        return
    log.info("mesh: stream %s updated: %s", name, ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A handle's durable push consumer: its stream, name, filter, and where it delivers."""

    stream: str
    name: str
    filter_subject: str
    deliver_subject: str
    group: str
    description: str
    #: a limits-retention stream (rooms): a replaced consumer resumes after the old one's ack floor
    resumable: bool = False


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec, *, max_in_flight: int, max_deliver: int,
                          ack_wait: float) -> str:
    """Create the consumer, update it in place (its delivery state is kept), or, when it delivers to another
    owner's subject, replace it. Returns ``"created"``, ``"updated"`` or ``"replaced"``.

    Replacing voids the old owner's deliveries and acks; on a work-queue stream whatever it had not
    acknowledged is still stored and goes to the new consumer at once, on the rooms stream the new consumer
    starts after the old one's ack floor (so a message acknowledged out of order may come again).
    """
    config = ConsumerConfig(
        name=spec.name,
        durable_name=spec.name,
        description=spec.description,
        filter_subject=spec.filter_subject,
        deliver_subject=spec.deliver_subject,
        deliver_group=spec.group,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_in_flight,
    )
    info: ConsumerInfo | None
    try:
        info = await js.consumer_info(spec.stream, spec.name)
    except nats.js.errors.NotFoundError:
        info = None
    if info is None:
        await js.add_consumer(spec.stream, config)
        return "created"
    if info.config.deliver_subject == spec.deliver_subject:
        await js.add_consumer(spec.stream, config)
        return "updated"
    if spec.resumable:
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        if floor:
            config = replace(config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(spec.stream, spec.name)
    await js.add_consumer(spec.stream, config)
    return "replaced"


async def consumer_exists(js: JetStreamContext, stream: str, name: str) -> bool:
    try:
        await js.consumer_info(stream, name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def remove_inbox(js: JetStreamContext, handle: str, *, rooms_consumer: str | None = None) -> None:
    """Delete the handle's durable inbox consumers (and ``rooms_consumer`` when given) and purge what is
    left in its inbox (ephemeral handles).

    The purge (which needs the ``$JS.API.STREAM.PURGE`` permission of the inbox streams, one that lets a
    user purge any inbox, so locked-down servers do not grant it) runs only when messages are left. Its
    room copies are left to expire with the rooms stream, for the same reason.
    """
    for stream, name, subjects in ((STREAM_NAME, durable_name(handle), inbox_filter(handle)),
                                   (PRIORITY_STREAM, priority_durable_name(handle), priority_filter(handle))):
        try:
            info = await js.consumer_info(stream, name)
        except nats.js.errors.NotFoundError:
            continue
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(stream, name)
        if info.num_pending or info.num_ack_pending:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.purge_stream(stream, subject=subjects)
    if rooms_consumer is not None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(ROOMS_STREAM, rooms_consumer)


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
