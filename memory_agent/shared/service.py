"""@memory's side of the shared state: the ``kv.*`` operations, their rules, and expiry events.

@memory is the one writer of the ``memory_state`` bucket (agents read it directly, see
:mod:`memory_agent.shared.state`). For each write it

1. fills in what the envelope implies: ``scope`` defaults to workflow, whose ``scope_id`` is the message's
   trace id; the actor scope's is the sender's handle;
2. enforces what NATS permissions cannot: the value is JSON within ``max_value_bytes``; an actor scope is
   written only by its own handle and the global scope only by ``[shared] global_writers`` (when set), and
   by ``[security] admins``; a write that arrives after its ``deadline`` (the SDK's request timeout) is not
   applied, so a caller that gave up never sees it land later;
3. reads the key's current revision, checks ``if_version``, and writes with compare-and-set on that
   revision (so ``previous_data`` in the change event is exactly the value replaced), under a per-key lock
   so the events of one key leave in version order;
4. publishes the change event (de-duplicated by the KV revision) before answering.

A redelivered write (same message id) is answered from what the first delivery did. TTL expiry is noticed
by a durable consumer on the bucket (:meth:`SharedState.watch_expiries`), which turns the server's marker
into an ``expire`` event, once, even across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from memory_agent.errors import SharedAccessDenied, SharedMemoryError, ValueTooLarge, VersionConflict
from memory_agent.protocols import Clock
from memory_agent.shared.constants import HEADER_MARKER_REASON, SCOPES, STATE_PREFIX, STATE_STREAM, Scope
from memory_agent.shared.keys import Address, parse_kv_key, validate_scope_id
from memory_agent.shared.requests import KvRequest
from memory_agent.shared.state import Current, StateStore, WrongRevision
from memory_agent.shared.wire import Action, ChangeEvent, ok
from mesh import Message

__all__ = ["EXPIRY_CONSUMER", "SharedState", "WriteRules"]

log = logging.getLogger(__name__)

#: The durable consumer (on the bucket's stream) that turns TTL expiries into events; replicas share it.
EXPIRY_CONSUMER = "memory_expiry"
_CAS_ATTEMPTS = 20
_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class WriteRules:
    """Who may write where: ``admins`` anywhere; an actor scope only its own handle; the global scope
    anyone, or only ``global_writers`` when that is not empty. ``max_value_bytes`` caps a value's JSON."""

    max_value_bytes: int
    global_writers: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()

    def check(self, handle: str, address: Address) -> None:
        """Raises SharedAccessDenied when ``handle`` may not write ``address``."""
        if handle in self.admins:
            return
        if address.scope == "actor" and address.scope_id != handle:
            raise SharedAccessDenied(
                f"@{handle} may not write the actor scope of {address.scope_id!r}: an actor scope is written "
                "only by its own handle (or an admin in [security] admins)", handle=handle, scope="actor",
                scope_id=address.scope_id)
        if address.scope == "global" and self.global_writers and handle not in self.global_writers:
            raise SharedAccessDenied(
                f"@{handle} may not write the global scope: only {', '.join(self.global_writers)} may "
                "([shared] global_writers)", handle=handle, scope="global", scope_id="")


class SharedState:
    """Serves ``kv.*`` for @memory over ``store``; ``clock`` gives seconds since the epoch, UTC."""

    def __init__(self, store: StateStore, rules: WriteRules, *, clock: Clock) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # (sender, message_id) -> the reply: a message id is unique among one sender's messages
        self._done: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.writes = 0
        self.expiries = 0

    # ---- addresses -------------------------------------------------------------------------------------

    @staticmethod
    def address(msg: Message, request: KvRequest) -> Address:
        """Where ``request`` points: its scope (default workflow) and scope id (default: the envelope's trace id
        for workflow, the sender for actor; the session scope needs one). Raises SharedMemoryError."""
        scope: Scope = request.scope or "workflow"
        scope_id = request.scope_id
        if scope_id is None:
            if scope == "session":
                raise SharedMemoryError('the session scope needs "scope_id" (the session\'s id)', field="scope_id")
            scope_id = {"workflow": msg.trace_id, "actor": msg.from_handle}.get(scope, "")
        return Address(scope, validate_scope_id(scope, scope_id), request.key)

    @staticmethod
    def lookup_order(msg: Message, request: KvRequest) -> list[Address]:
        """The hierarchical get's addresses, narrowest first: workflow (the envelope's trace id), session
        (``session_id``, when given), actor (the sender), global."""
        ids: dict[Scope, str | None] = {"workflow": msg.trace_id, "session": request.session_id,
                                        "actor": msg.from_handle, "global": ""}
        return [Address(scope, validate_scope_id(scope, ids[scope]), request.key) for scope in SCOPES
                if ids[scope] is not None]

    # ---- operations ------------------------------------------------------------------------------------

    async def handle(self, msg: Message, request: KvRequest) -> dict[str, Any]:
        """The reply to one ``kv.*`` request. Raises SharedMemoryError (the caller's to fix) and
        SharedMemoryUnavailable (JetStream)."""
        if request.op in ("kv.get", "kv.exists"):
            return await self._get(msg, request)
        if request.op == "kv.list":
            return await self._list(msg, request)
        if request.op == "kv.history":
            address = self.address(msg, request)
            changes = await self._store.history(address, request.limit)
            return ok(key=address.key, scope=address.scope, scope_id=address.scope_id,
                      changes=[{**c.to_json(), "seq": c.seq} for c in changes])
        return await self._write(msg, request)

    async def _get(self, msg: Message, request: KvRequest) -> dict[str, Any]:
        candidates = [self.address(msg, request)] if request.scope is not None else self.lookup_order(msg, request)
        found = await self._store.first(candidates)
        if request.op == "kv.exists":
            return ok(exists=found is not None, key=request.key, scope=found.scope if found else None,
                      scope_id=found.scope_id if found else None, version=found.version if found else 0)
        if found is None:
            return ok(found=False, key=request.key, value=None, scope=request.scope,
                      scope_id=candidates[0].scope_id if request.scope is not None else None, version=0,
                      updated_at=None, updated_by=None, expires_at=None)
        return ok(found=True, **found.to_json())

    async def _list(self, msg: Message, request: KvRequest) -> dict[str, Any]:
        address = self.address(msg, KvRequest(op=request.op, key="x", scope=request.scope,
                                              scope_id=request.scope_id))
        keys = [k for k, _ in await self._store.list_keys(address.scope, address.scope_id, request.prefix)
                if request.cursor is None or k > request.cursor]
        page = keys[: request.limit]
        more = len(keys) > request.limit
        return ok(scope=address.scope, scope_id=address.scope_id, keys=page,
                  next_cursor=page[-1] if more and page else None)

    async def _write(self, msg: Message, request: KvRequest) -> dict[str, Any]:
        if request.deadline is not None and self._clock() > request.deadline:
            raise SharedMemoryError(
                f"{request.op} arrived {self._clock() - request.deadline:.1f} s after its deadline (the sender had "
                "given up waiting), so it was not applied: send it again", field="deadline")
        address = self.address(msg, request)
        self._rules.check(msg.from_handle, address)
        if request.op == "kv.set" and len(request.encoded) > self._rules.max_value_bytes:
            raise ValueTooLarge(
                f'"value" is {len(request.encoded)} bytes of JSON; shared memory takes at most '
                f"{self._rules.max_value_bytes} ([shared] max_value_bytes)", field="value",
                size=len(request.encoded), limit=self._rules.max_value_bytes)
        sent = (msg.from_handle, msg.message_id)
        done = self._done.get(sent)
        if done is not None:
            return done
        async with self._locked(address.state_subject):
            reply = await self._apply(msg, request, address)
        self._done[sent] = reply
        while len(self._done) > _REMEMBERED:
            self._done.popitem(last=False)
        return reply

    async def _apply(self, msg: Message, request: KvRequest, address: Address) -> dict[str, Any]:
        for _ in range(_CAS_ATTEMPTS):
            current = await self._store.read(address)
            if current.revision and current.message_id == msg.message_id and current.by == msg.from_handle:
                return await self._redelivered(address, current, request, msg.from_handle)
            version = current.entry.version if current.entry is not None else 0
            if request.if_version is not None and request.if_version != version:
                raise self._conflict(address, request.if_version, version)
            if request.op == "kv.delete" and current.entry is None:
                return ok(deleted=False, key=address.key, scope=address.scope, scope_id=address.scope_id, version=0)
            try:
                if request.op == "kv.set":
                    revision = await self._store.write(address, request.encoded, by=msg.from_handle,
                                                       message_id=msg.message_id, expected=current.revision,
                                                       ttl_s=request.ttl_s)
                else:
                    revision = await self._store.remove(address, by=msg.from_handle, message_id=msg.message_id,
                                                        expected=current.revision)
            except WrongRevision:
                if request.if_version is not None:  # someone wrote since we read: the caller's check failed
                    latest = await self._store.read(address)
                    raise self._conflict(address, request.if_version,
                                         latest.entry.version if latest.entry else 0) from None
                continue
            previous = current.entry.value if current.entry is not None else None
            return await self._changed(address, request, revision, previous, msg.from_handle)
        raise SharedMemoryError(f"{request.op}: the key changed {_CAS_ATTEMPTS} times while being written; retry",
                                field="key")

    async def _redelivered(self, address: Address, current: Current, request: KvRequest, by: str) -> dict[str, Any]:
        """The write was applied by an earlier delivery: make sure its event is out, answer as then."""
        last = await self._store.last_change(address)
        if last is None or last.version < current.revision:
            previous = last.data if last is not None and last.action == "set" else None
            return await self._changed(address, request, current.revision, previous, by)
        return self._write_reply(address, request, current.revision)

    async def _changed(self, address: Address, request: KvRequest, revision: int, previous: Any,
                       by: str) -> dict[str, Any]:
        action: Action = "set" if request.op == "kv.set" else "delete"
        event = ChangeEvent(key=address.key, scope=address.scope, scope_id=address.scope_id, action=action,
                            data=request.value if action == "set" else None, previous_data=previous,
                            version=revision, at=self._clock(), by=by)
        await self._store.publish_change(address, event)
        self.writes += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s by @%s in %s: revision %d, %d bytes", request.op, by, address.scope, revision,
                      len(request.encoded))
        return self._write_reply(address, request, revision)

    @staticmethod
    def _write_reply(address: Address, request: KvRequest, revision: int) -> dict[str, Any]:
        if request.op == "kv.set":
            return ok(key=address.key, scope=address.scope, scope_id=address.scope_id, version=revision)
        return ok(deleted=True, key=address.key, scope=address.scope, scope_id=address.scope_id, version=revision)

    @staticmethod
    def _conflict(address: Address, expected: int, current: int) -> VersionConflict:
        state = f"at version {current}" if current else "absent (version 0)"
        return VersionConflict(
            f"{address.key!r} in {address.scope} is {state}, not at version {expected}: read it again and retry "
            "with its current version", key=address.key, expected=expected, current=current)

    @contextlib.asynccontextmanager
    async def _locked(self, subject: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(subject, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(subject, None)

    # ---- expiry ----------------------------------------------------------------------------------------

    async def watch_expiries(self, js: JetStreamContext) -> None:
        """Turn the server's TTL markers into ``expire`` events, until cancelled.

        A durable pull consumer (:data:`EXPIRY_CONSUMER`, headers only) on the bucket's stream: it resumes
        where it stopped after a restart, and replicas of @memory share it. An expiry already published (the
        key's last change is at or past the marker) is not published again.
        """
        config = ConsumerConfig(durable_name=EXPIRY_CONSUMER, name=EXPIRY_CONSUMER, headers_only=True,
                                ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.ALL,
                                filter_subject=STATE_PREFIX + ">", max_ack_pending=10_000,
                                description="@memory: TTL expiries of shared memory become expire events")
        sub = None
        while True:
            started = time.monotonic()
            try:
                if sub is None:
                    sub = await js.pull_subscribe(STATE_PREFIX + ">", durable=EXPIRY_CONSUMER, stream=STATE_STREAM,
                                                  config=config)
                msgs = await sub.fetch(256, timeout=5.0)
            except (TimeoutError, nats.errors.TimeoutError):
                if time.monotonic() - started < 1.0:  # failing fast (say while reconnecting): do not spin
                    await asyncio.sleep(1.0)
                continue
            except nats.errors.ConnectionClosedError:
                log.debug("shared memory: the connection closed; the expiry watch stops")
                return
            except (nats.errors.Error, OSError) as exc:
                log.warning("shared memory: the expiry watch failed (%s); retrying in 2 s", type(exc).__name__)
                sub = None
                await asyncio.sleep(2.0)
                continue
            handled = None
            for m in msgs:
                if (m.headers or {}).get(HEADER_MARKER_REASON) == "MaxAge":
                    try:
                        await self._expired(m.subject, m.metadata.sequence.stream, m.metadata.timestamp.timestamp())
                    except SharedMemoryError as exc:  # unacked from here on: redelivered after the ack wait
                        log.warning("shared memory: expire event for stream sequence %d not published (%s); "
                                    "will retry", m.metadata.sequence.stream, exc)
                        break
                handled = m
            if handled is not None:  # AckPolicy.ALL: acknowledges everything up to it
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await handled.ack()

    async def _expired(self, subject: str, revision: int, at: float) -> None:
        try:
            address = parse_kv_key(subject[len(STATE_PREFIX):])
        except ValueError:
            return
        async with self._locked(address.state_subject):
            last = await self._store.last_change(address)
            if last is not None and last.version >= revision:
                return
            previous = last.data if last is not None and last.action == "set" else None
            event = ChangeEvent(key=address.key, scope=address.scope, scope_id=address.scope_id, action="expire",
                                data=None, previous_data=previous, version=revision, at=at, by="")
            await self._store.publish_change(address, event)
        self.expiries += 1
        log.debug("shared memory: a value in %s expired (revision %d)", address.scope, revision)
