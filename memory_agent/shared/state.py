"""Shared memory on JetStream: the ``memory_state`` KV bucket (the state) and the ``MEMORY_CHANGES`` stream
(change events, history, replay). Used by @memory to write and by the SDK to read directly.

A value is stored as its JSON, with headers ``Memory-By`` (the handle that asked) and
``Memory-Message-Id`` (the mesh message that wrote it); a write is a publish with
``Nats-Expected-Last-Subject-Sequence`` (compare-and-set on the key's revision) and, for a TTL, the
per-message ``Nats-TTL`` of nats-server 2.11+ (ADR-43), after which the server removes the value and places
a marker (``Nats-Marker-Reason: MaxAge``) that :mod:`memory_agent.shared.service` turns into an ``expire``
event. A delete is the KV delete marker (``KV-Operation: DEL``). Reads are JetStream direct gets
(``$JS.API.DIRECT.GET.KV_memory_state.<subject>``): any replica of the stream answers.

Errors: everything NATS can fail with becomes :class:`~memory_agent.errors.SharedMemoryUnavailable` saying
what is missing; a failed compare-and-set raises :class:`WrongRevision` carrying the key's revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RawStreamMsg,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from memory_agent.errors import SharedMemoryError, SharedMemoryUnavailable
from memory_agent.shared.constants import (
    CHANGES_PREFIX,
    CHANGES_STREAM,
    EXPIRY_MARKER_TTL,
    HEADER_BY,
    HEADER_KV_OPERATION,
    HEADER_MARKER_REASON,
    HEADER_MESSAGE,
    STATE_BUCKET,
    STATE_PREFIX,
    STATE_STREAM,
    Scope,
)
from memory_agent.shared.keys import Address, KeyPattern, parse_kv_key
from memory_agent.shared.wire import ChangeEvent, Entry
from mesh.jetstream import latest_entries

__all__ = ["Current", "StateLimits", "StateStore", "WrongRevision"]

log = logging.getLogger(__name__)

#: Seconds one JetStream request (direct get, publish) may take before the operation is reported unavailable.
_TIMEOUT = 5.0
_WRONG_LAST = re.compile(r"wrong last sequence: (\d+)")
# JetStream's error codes: the expected-last-subject-sequence check failed; the stream is full ("maximum
# bytes exceeded"); a message over the bucket's max_value_size.
_ERR_WRONG_LAST = (10071, 10164)
_ERR_FULL = 10077
_ERR_TOO_BIG = 10054
#: Seconds after which the server removes a change subscription's consumer whose client went away.
_INACTIVE = 30.0


class WrongRevision(Exception):
    """A compare-and-set found the key at ``current`` (its last revision, 0 when it never existed)."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the key is at revision {current}")
        self.current = current


@dataclass(frozen=True, slots=True)
class Current:
    """What a key holds now: ``entry`` (``None`` when absent, deleted or expired) and ``revision``, the
    sequence of its last message (a value or a marker; 0 when it never existed), which a write must name.
    ``message_id`` and ``by``: the message that wrote it and its sender (a message id is unique per sender)."""

    entry: Entry | None
    revision: int
    message_id: str = ""
    by: str = ""


@dataclass(frozen=True, slots=True)
class StateLimits:
    """How the bucket and the stream are created (``[shared]`` in the config).

    ``max_value_bytes``: the largest value; ``state_max_bytes``/``changes_max_bytes``: the most bytes each
    holds (a full bucket refuses writes, a full changes stream drops its oldest events);
    ``changes_max_age``: seconds a change event is kept; ``history_per_key``: change events kept per key;
    ``replicas``: JetStream replicas of both (1 on one server, 3 on a cluster).
    """

    max_value_bytes: int = 256 * 1024
    state_max_bytes: int = 1024**3
    changes_max_bytes: int = 1024**3
    changes_max_age: float = 7 * 24 * 3600.0
    history_per_key: int = 64
    replicas: int = 1


@contextlib.contextmanager
def _jetstream(what: str) -> Iterator[None]:
    """Turn NATS failures into SharedMemoryUnavailable naming ``what`` and the cause."""
    try:
        yield
    except (SharedMemoryError, WrongRevision):
        raise
    except nats.errors.NoRespondersError:
        raise SharedMemoryUnavailable(
            f"{what}: no JetStream answered for the shared-memory bucket {STATE_BUCKET!r}; it is created when "
            "@memory starts, so start @memory (or check that JetStream is enabled)") from None
    except (TimeoutError, nats.errors.TimeoutError):
        raise SharedMemoryUnavailable(f"{what}: JetStream did not answer within {_TIMEOUT:.0f} s") from None
    except nats.js.errors.APIError as exc:
        if exc.err_code == _ERR_FULL:
            raise SharedMemoryUnavailable(
                f"{what}: shared memory is full ({exc.description}); delete keys, or raise the bucket's max bytes "
                "(set when @memory created it from [shared] state_max_bytes) with the NATS tools") from None
        if exc.err_code == _ERR_TOO_BIG:
            raise SharedMemoryUnavailable(
                f"{what}: JetStream refused the value as larger than the bucket's max_value_size (set when @memory "
                "created it from [shared] max_value_bytes); raise it with the NATS tools") from None
        raise SharedMemoryUnavailable(f"{what}: JetStream refused ({exc.description or type(exc).__name__})") from None
    except nats.errors.Error as exc:
        raise SharedMemoryUnavailable(f"{what}: NATS error ({type(exc).__name__})") from None


def _decode_entry(address: Address, msg: RawStreamMsg) -> Current:
    headers = msg.headers or {}
    revision = int(msg.seq or 0)
    if headers.get(HEADER_KV_OPERATION) in ("DEL", "PURGE") or HEADER_MARKER_REASON in headers:
        return Current(None, revision, str(headers.get(HEADER_MESSAGE, "")), str(headers.get(HEADER_BY, "")))
    try:
        value = json.loads(msg.data or b"null")
    except ValueError:
        raise SharedMemoryError(f"the value of {address.key!r} in {address.scope} is not JSON: it was written "
                                "around @memory; set it again through @memory") from None
    updated_at = msg.time.timestamp() if isinstance(msg.time, datetime) else 0.0
    ttl = headers.get("Nats-TTL")
    expires_at = updated_at + int(ttl) if ttl is not None and str(ttl).isdigit() else None
    entry = Entry(scope=address.scope, scope_id=address.scope_id, key=address.key, value=value, version=revision,
                  updated_at=updated_at, updated_by=str(headers.get(HEADER_BY, "")), expires_at=expires_at)
    return Current(entry, revision, str(headers.get(HEADER_MESSAGE, "")), entry.updated_by)


class StateStore:
    """Reads and writes shared memory on one JetStream context. ``ensure()`` creates what is missing
    (@memory); a plain ``StateStore(js)`` only reads and subscribes (the SDK)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv = KeyValue(name=STATE_BUCKET, stream=STATE_STREAM, pre=STATE_PREFIX, js=js, direct=True)

    async def ensure(self, limits: StateLimits) -> None:
        """Create the bucket and the changes stream unless they exist (existing ones are used as they are,
        so an operator may change their limits with the NATS tools). Raises SharedMemoryUnavailable."""
        with _jetstream("creating shared memory"):
            try:
                await self._js.stream_info(STATE_STREAM)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):  # lost a creation race: fine
                    await self._js.create_key_value(KeyValueConfig(
                        bucket=STATE_BUCKET, description="@memory shared state (<scope>.<scope_id>.<key>)",
                        history=1, max_value_size=limits.max_value_bytes + 1024, max_bytes=limits.state_max_bytes,
                        storage=StorageType.FILE, replicas=limits.replicas, direct=True,
                        limit_marker_ttl=EXPIRY_MARKER_TTL))
            try:
                await self._js.stream_info(CHANGES_STREAM)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    await self._js.add_stream(StreamConfig(
                        name=CHANGES_STREAM, description="@memory shared-state changes (set, delete, expire)",
                        subjects=[CHANGES_PREFIX + ">"], retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE, discard=DiscardPolicy.OLD, max_age=limits.changes_max_age,
                        max_bytes=limits.changes_max_bytes, max_msgs_per_subject=limits.history_per_key,
                        duplicate_window=120.0, allow_direct=True, num_replicas=limits.replicas))

    # ---- reads -----------------------------------------------------------------------------------------

    async def read(self, address: Address) -> Current:
        """What ``address`` holds now (one direct get). Raises SharedMemoryUnavailable."""
        with _jetstream(f"reading {address.key!r}"):
            try:
                msg = await self._js.get_msg(STATE_STREAM, subject=address.state_subject, direct=True)
            except nats.js.errors.NotFoundError:
                return Current(None, 0)
        return _decode_entry(address, msg)

    async def first(self, candidates: Sequence[Address]) -> Entry | None:
        """The entry of the first of ``candidates`` that holds a value (all read at once), or ``None``: the
        hierarchical get when they are ordered narrowest first."""
        currents = await asyncio.gather(*(self.read(a) for a in candidates))
        return next((c.entry for c in currents if c.entry is not None), None)

    async def last_change(self, address: Address) -> ChangeEvent | None:
        """The latest change event of ``address`` still in the changes stream, or ``None``."""
        with _jetstream(f"reading the changes of {address.key!r}"):
            try:
                msg = await self._js.get_msg(CHANGES_STREAM, subject=address.change_subject, direct=True)
            except nats.js.errors.NotFoundError:
                return None
        try:
            return ChangeEvent.from_json(json.loads(msg.data or b""), seq=int(msg.seq or 0))
        except ValueError:
            log.warning("undecodable change event at stream sequence %s", msg.seq)
            return None

    async def list_keys(self, scope: Scope, scope_id: str, prefix: str) -> list[tuple[str, int]]:
        """``(key, revision)`` of every key present in one scope that starts with ``prefix``, sorted by key.
        Lists the bucket's subjects narrowed by the prefix's whole tokens, then reads each key's last entry
        (``mesh.jetstream.latest_entries``: a KV watch can miss keys while others are written)."""
        base = Address(scope, scope_id, "x").kv_key.rsplit(".", 1)[0]
        pattern = KeyPattern(prefix + "*") if prefix else None
        narrowed = pattern.key_filter() if pattern is not None else ">"
        found: list[tuple[str, int]] = []
        with _jetstream(f"listing the keys of {scope}"):
            entries = await latest_entries(self._js, STATE_BUCKET, f"{base}.{narrowed}")
        for entry in entries:
            try:
                address = parse_kv_key(entry.key)
            except ValueError:
                continue
            if address.key.startswith(prefix):
                found.append((address.key, int(entry.revision or 0)))
        found.sort()
        return found

    async def history(self, address: Address, limit: int) -> list[ChangeEvent]:
        """The last ``limit`` change events of ``address``, newest first (as many as the stream keeps)."""
        kept: deque[ChangeEvent] = deque(maxlen=limit)
        async for msg in self.replay(address.change_subject, DeliverPolicy.ALL):
            with contextlib.suppress(ValueError):
                kept.append(ChangeEvent.from_json(json.loads(msg.data), seq=msg.metadata.sequence.stream))
        return list(reversed(kept))

    async def subscribe_changes(self, subject: str, deliver: Callable[[Msg], Awaitable[None]], *,
                                policy: DeliverPolicy = DeliverPolicy.NEW, start_time: datetime | None = None,
                                start_seq: int | None = None) -> JetStreamContext.PushSubscription:
        """An ordered consumer of ``MEMORY_CHANGES`` on ``subject`` (a filter) calling ``deliver`` for each
        message, from ``policy`` on (``BY_START_TIME`` with ``start_time``, ``BY_START_SEQUENCE`` with
        ``start_seq``). Gaps (a reconnect) are healed by the ordered consumer. Raises
        SharedMemoryUnavailable."""
        config = ConsumerConfig(deliver_policy=policy, opt_start_time=start_time, opt_start_seq=start_seq,
                                inactive_threshold=_INACTIVE)
        with _jetstream("subscribing to shared-memory changes"):
            return await self._js.subscribe(subject, stream=CHANGES_STREAM, cb=deliver, ordered_consumer=True,
                                            config=config, idle_heartbeat=5.0)

    async def replay(self, subject: str, policy: DeliverPolicy) -> AsyncIterator[Msg]:
        """The messages of ``MEMORY_CHANGES`` on ``subject`` stored when it is called, oldest first."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def deliver(msg: Msg) -> None:
            await queue.put(msg)

        sub = await self.subscribe_changes(subject, deliver, policy=policy)
        try:
            with _jetstream("reading shared-memory changes"):
                info = await sub.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered is not None else 0
            total = int(info.num_pending or 0) + int(delivered or 0)
            seen = 0
            while seen < total:
                msg = await asyncio.wait_for(queue.get(), _TIMEOUT)
                seen += 1
                yield msg
                if msg.metadata.num_pending == 0:
                    return
        except TimeoutError:
            raise SharedMemoryUnavailable(f"reading shared-memory changes: JetStream stopped delivering for "
                                          f"{_TIMEOUT:.0f} s") from None
        finally:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await sub.unsubscribe()

    # ---- writes (@memory) ------------------------------------------------------------------------------

    async def write(self, address: Address, encoded: bytes, *, by: str, message_id: str, expected: int,
                    ttl_s: int | None) -> int:
        """Store ``encoded`` (JSON) at ``address`` if the key is still at revision ``expected``; returns the
        new revision. Raises WrongRevision, SharedMemoryUnavailable."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected), HEADER_BY: by, HEADER_MESSAGE: message_id}
        return await self._publish(address, encoded, headers, ttl_s, f"writing {address.key!r}")

    async def remove(self, address: Address, *, by: str, message_id: str, expected: int) -> int:
        """Place the KV delete marker at ``address`` if the key is at ``expected``; returns its revision."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected), HEADER_KV_OPERATION: "DEL",
                   HEADER_BY: by, HEADER_MESSAGE: message_id}
        return await self._publish(address, b"", headers, None, f"deleting {address.key!r}")

    async def _publish(self, address: Address, data: bytes, headers: dict[str, str], ttl_s: int | None,
                       what: str) -> int:
        with _jetstream(what):
            try:
                ack = await self._js.publish(address.state_subject, data, timeout=_TIMEOUT, stream=STATE_STREAM,
                                             headers=headers, msg_ttl=ttl_s)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _ERR_WRONG_LAST:
                    match = _WRONG_LAST.search(exc.description or "")
                    raise WrongRevision(int(match.group(1)) if match else 0) from None
                raise
        return int(ack.seq)

    async def publish_change(self, address: Address, event: ChangeEvent) -> ChangeEvent:
        """Publish ``event`` on ``address``'s change subject, de-duplicated by its KV revision (publishing
        the same change twice stores it once); returns it with its stream sequence."""
        body = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with _jetstream(f"publishing the change of {address.key!r}"):
            ack = await self._js.publish(address.change_subject, body, timeout=_TIMEOUT, stream=CHANGES_STREAM,
                                         headers={"Nats-Msg-Id": f"{STATE_BUCKET}:{event.action}:{event.version}"})
        return replace(event, seq=int(ack.seq))
