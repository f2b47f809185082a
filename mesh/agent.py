"""AsyncAgent: a tailbus-style agent on NATS JetStream (handles, sessions, trace ids, durable inboxes).

Delivery contract (see docs/mesh.md):

* at-least-once: a message is acked only after the handler returned; a handler that raises is
  nak'ed (redelivered after ``NAK_DELAY`` s) and given up after ``max_deliver`` deliveries; a crash
  before the ack means redelivery after ``ack_wait`` s. Handlers should be idempotent
  (``Message.message_id`` is unique per message).
* at most ``max_in_flight`` handlers run at once (the consumer's MaxAckPending and a semaphore);
  the server holds everything else, nothing queues unboundedly in the process, nothing is dropped.
* a message that a pending ``request()`` consumes is acked at once and never reaches ``on_message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Self, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from .auth import NatsAuth
from .connection import Denials, connect
from .constants import (
    DEFAULT_ACK_WAIT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DELIVER,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PAYLOAD,
    REGISTRY_BUCKET,
    SESSIONS_BUCKET,
    STREAM_NAME,
)
from .dispatch import Dispatcher, MessageHandler
from .errors import (
    MeshError,
    MeshTimeout,
    NotRegistered,
    PermissionDenied,
)
from .handles import deliver_subject, durable_name, inbox_filter, reply_prefix, validate_handle
from .jetstream import ensure_bucket, ensure_consumer, ensure_stream, remove_inbox
from .registry import Record, Registry, find_matches, matches_tags
from .sender import Sender
from .sessions import SessionStore
from .types import (
    HandleEntry,
    HandleMatch,
    Introspected,
    Manifest,
    Message,
    Opened,
    Registered,
    Resolved,
    Sent,
)

__all__ = ["AsyncAgent", "MessageHandler"]

log = logging.getLogger(__name__)

H = TypeVar("H", bound=MessageHandler)

#: nats-py's default JetStream API timeout, seconds.
_JS_TIMEOUT = 5.0


@contextlib.contextmanager
def _nats_errors(what: str) -> Iterator[None]:
    """Turn nats-py errors into the mesh's own (MeshTimeout, MeshError); MeshErrors pass through."""
    try:
        yield
    except MeshError:
        raise
    except nats.errors.TimeoutError as exc:
        raise MeshTimeout(f"{what}: NATS did not answer within {_JS_TIMEOUT}s", timeout=_JS_TIMEOUT) from exc
    except nats.errors.Error as exc:
        raise MeshError(f"{what}: {type(exc).__name__}: {exc}") from exc


class AsyncAgent:
    """An agent on the mesh, addressed by ``handle``.

    ``servers``: NATS URL(s). ``auth``: credentials and TLS (:class:`~mesh.auth.NatsAuth`); a
    server that refuses them makes ``start()`` raise AuthenticationError at once. ``max_in_flight``:
    concurrent handlers (and the consumer's MaxAckPending). ``max_payload``: limit on a payload,
    UTF-8 bytes. ``connect_options``: passed to ``nats.connect`` after ``auth``'s options, so they
    win (callbacks, other auth...); reconnects forever unless they say otherwise.
    ``max_deliver``: deliveries of one message before it is terminated. ``ack_wait``: seconds
    before an unacked message is redelivered (slow handlers send in-progress acks every
    ``ack_wait / 3`` s, so they are not). ``heartbeat_interval``: seconds between registry
    heartbeats; the handle counts as offline after three missed ones. ``drain_timeout``: seconds
    ``close()`` waits for running handlers.

    Raises InvalidHandle for a malformed ``handle``.
    """

    def __init__(
        self,
        handle: str,
        *,
        servers: str | Iterable[str] = "nats://127.0.0.1:4222",
        manifest: Manifest | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        connect_options: Mapping[str, Any] | None = None,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        ack_wait: float = DEFAULT_ACK_WAIT,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        drain_timeout: float = 30.0,
        auth: NatsAuth | None = None,
    ) -> None:
        self._handle = validate_handle(handle)
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        if max_deliver < 1 and max_deliver != -1:
            raise ValueError("max_deliver must be >= 1 (or -1 for unlimited)")
        if ack_wait <= 0 or heartbeat_interval <= 0:
            raise ValueError("ack_wait and heartbeat_interval must be > 0")
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        self._manifest = manifest
        self._max_in_flight = max_in_flight
        self._max_payload = max_payload
        self._connect_options = dict(connect_options or {})
        self._auth = auth
        self._denials = Denials(self._handle)
        self._max_deliver = max_deliver
        self._ack_wait = float(ack_wait)
        self._heartbeat_interval = float(heartbeat_interval)
        self._drain_timeout = drain_timeout
        self._owner = uuid.uuid4().hex

        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._registry: Registry | None = None
        self._outbox: Sender | None = None
        self._sub: Subscription | None = None
        self._record: Record | None = None
        self._record_revision = 0
        self._ephemeral = False
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        self._dispatch = Dispatcher(self._handle, max_in_flight=max_in_flight, max_deliver=max_deliver,
                                    ack_wait=self._ack_wait, waiters=self._waiters)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stopped: asyncio.Event | None = None
        self._closed = False

    # ── properties ──────────────────────────────────────────────────

    @property
    def handle(self) -> str:
        """This agent's handle."""
        return self._handle

    @property
    def is_registered(self) -> bool:
        """True between a successful ``register()`` and ``close()``."""
        return self._record is not None and not self._closed

    @property
    def is_connected(self) -> bool:
        """True while the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    @property
    def max_in_flight(self) -> int:
        """The limit on concurrently running handlers."""
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Handlers running right now."""
        return self._dispatch.running

    # ── lifecycle ───────────────────────────────────────────────────

    async def start(self) -> Self:
        """Connect and make sure the stream and KV buckets exist; idempotent.

        Raises AuthenticationError (credentials refused, TLS failed), MeshError (cannot connect,
        JetStream unavailable).
        """
        if self._closed:
            raise MeshError(f"agent {self._handle!r} is closed")
        if self._nc is not None:
            return self
        options: dict[str, Any] = {
            "servers": self._servers,
            "name": f"mesh:{self._handle}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "inbox_prefix": reply_prefix(self._handle),
        }
        if self._auth is not None:
            options.update(self._auth.connect_options())
        options.update(self._connect_options)
        nc = await connect(options, on_error=self._on_nats_error)
        self._nc = nc
        self._stopped = asyncio.Event()
        js = self._js = nc.jetstream()

        async def setup() -> tuple[Registry, SessionStore]:
            await ensure_stream(js)
            return (Registry(await ensure_bucket(js, REGISTRY_BUCKET)),
                    SessionStore(await ensure_bucket(js, SESSIONS_BUCKET)))

        try:
            # The JetStream API answers on the reply inboxes: a server that does not let this user
            # subscribe to them would otherwise show up as timeouts only.
            registry, sessions = await self._denials.guard(setup(), "subscribe", [f"{options['inbox_prefix']}.>"])
        except PermissionDenied:
            await nc.close()
            self._nc = None
            raise
        except nats.errors.Error as exc:
            await nc.close()
            self._nc = None
            raise MeshError(f"JetStream unavailable at {self._servers}: {type(exc).__name__}: {exc}") from exc
        self._registry = registry
        self._outbox = Sender(self._handle, nc=nc, js=js, registry=registry, sessions=sessions,
                              denials=self._denials, max_payload=self._max_payload)
        log.debug("mesh agent %s connected to %s", self._handle, nc.connected_url)
        return self

    async def close(self) -> None:
        """Drain and disconnect; idempotent.

        Stops taking deliveries, waits up to ``drain_timeout`` s for running handlers (the rest are
        nak'ed for redelivery), fails pending ``request()`` calls, then marks the handle offline
        (keeping its durable inbox) or, for an ephemeral handle, removes its registry entry, its
        consumer and whatever is left in its inbox.
        """
        if self._closed:
            return
        self._dispatch.closing = True
        if self._stopped is not None:
            self._stopped.set()
        for session, fut in list(self._waiters.items()):
            if not fut.done():
                fut.set_exception(MeshError(f"agent {self._handle!r} closed while waiting on {session}"))
        self._waiters.clear()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        if self._sub is not None:
            try:  # stop deliveries; what is already buffered is nak'ed (see _on_delivery) for quick redelivery
                await asyncio.wait_for(self._sub.drain(), 5.0)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.debug("mesh agent %s: draining the inbox subscription failed: %s", self._handle,
                          type(exc).__name__)
            self._sub = None
        await self._dispatch.drain(self._drain_timeout)
        await self._release_handle()
        self._closed = True
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.flush(), 5.0)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.debug("mesh agent %s: final flush failed: %s", self._handle, type(exc).__name__)
            await nc.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_nc", None) is not None and not getattr(self, "_closed", True):
            _warn(f"AsyncAgent {self._handle!r} was never closed", ResourceWarning, stacklevel=1)

    async def run_forever(self) -> None:
        """Block until ``close()`` is called (handlers run in the background meanwhile)."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()

    # ── registration ────────────────────────────────────────────────

    async def register(self, *, manifest: Manifest | None = None, ephemeral: bool = False) -> Registered:
        """Claim the handle, publish the manifest, bind the durable inbox and start heartbeating.

        The first claim wins: raises HandleTaken while another live agent holds the handle. A
        handle whose owner stopped heartbeating (crashed) can be claimed again; its durable inbox
        is resumed, so queued messages are delivered. ``ephemeral=True``: ``close()`` removes
        the registry entry, the consumer and the leftover inbox (for short-lived CLI clients).
        Set ``on_message`` first if this agent serves requests. Calling it again re-publishes.
        """
        await self.start()
        with _nats_errors(f"register {self._handle!r}"):
            return await self._register(manifest if manifest is not None else self._manifest, ephemeral)

    async def _register(self, manifest: Manifest | None, ephemeral: bool) -> Registered:
        assert self._js is not None and self._registry is not None and self._nc is not None
        now = time.time()
        record = Record(
            handle=self._handle,
            owner=self._owner,
            manifest=manifest,
            registered_at=now,
            heartbeat_at=now,
            ttl=3 * self._heartbeat_interval,
            online=True,
            ephemeral=ephemeral,
        )
        revision = await self._denials.guard(self._registry.claim(record), "publish",
                                             [f"$KV.{REGISTRY_BUCKET}.{self._handle}"])
        self._record, self._record_revision, self._ephemeral = record, revision, ephemeral
        self._manifest = manifest
        try:
            consumer_api = f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.{durable_name(self._handle)}." \
                           f"{inbox_filter(self._handle)}"
            await self._denials.guard(
                ensure_consumer(self._js, self._handle, max_in_flight=self._max_in_flight,
                                max_deliver=self._max_deliver, ack_wait=self._ack_wait),
                "publish", [consumer_api])
            if self._sub is None:
                subject = deliver_subject(self._handle)
                nc = self._nc

                async def subscribe() -> Subscription:
                    sub = await nc.subscribe(subject, queue=self._handle, cb=self._dispatch.on_delivery)
                    await nc.flush(int(_JS_TIMEOUT))  # a denied subscription is reported before the PONG
                    await asyncio.sleep(0)
                    return sub

                self._sub = await self._denials.guard(subscribe(), "subscribe", [subject])
        except Exception:
            self._record = None
            await self._registry.remove(self._handle, self._owner)
            raise
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.create_task(self._heartbeat_loop(), name=f"mesh-heartbeat-{self._handle}")
        log.info("mesh agent %s registered (ephemeral=%s, max_in_flight=%d)", self._handle, ephemeral,
                 self._max_in_flight)
        return Registered(handle=self._handle, ephemeral=ephemeral)

    # ── sessions ────────────────────────────────────────────────────

    async def open_session(
        self,
        to: str,
        payload: str,
        *,
        content_type: str = "text/plain",
        trace_id: str | None = None,
    ) -> Opened:
        """Open a session with ``to``; its first message carries ``payload``.

        ``trace_id``: the caller's, or a new uuid4 when None/empty; every message of the session
        carries it. Raises InvalidHandle, HandleNotFound (never registered), PayloadTooLarge,
        NotRegistered, MeshTimeout. Delivery to an offline (registered) handle waits in its inbox.
        """
        with _nats_errors(f"open_session to {to!r}"):
            return await self._sender().open(str(uuid.uuid4()), to, payload, content_type=content_type,
                                             trace_id=trace_id)

    async def send(self, session: str, payload: str, *, content_type: str = "text/plain") -> Sent:
        """Send ``payload`` to the other participant of ``session`` (either side may send).

        Raises SessionNotFound, NotParticipant, SessionClosed, PayloadTooLarge, NotRegistered.
        """
        with _nats_errors(f"send in {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "message")
        return Sent(message_id=message_id, sequence=seq)

    async def resolve(self, session: str, payload: str = "", *, content_type: str = "text/plain") -> Resolved:
        """Close ``session`` with a final message (either side may resolve; nothing after it).

        Raises SessionNotFound, NotParticipant, SessionClosed (already resolved),
        PayloadTooLarge, NotRegistered.
        """
        with _nats_errors(f"resolve {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "session_resolve")
        return Resolved(message_id=message_id, sequence=seq)

    async def request(
        self,
        to: str,
        payload: str,
        *,
        content_type: str = "text/plain",
        trace_id: str | None = None,
        timeout: float = 30.0,
    ) -> Message:
        """Open a session with ``to`` and return the first message that comes back in it.

        That is the resolve message if the peer resolves straight away, otherwise its first reply
        (later messages of the session then go to ``on_message``). The waiter exists before the
        open is published, so a fast answer is never missed; the answer arrives in this agent's
        durable inbox like any other message and is not passed to ``on_message``. Raises
        MeshTimeout (``.timeout``) if nothing arrives within ``timeout`` s (the session stays
        open), plus everything ``open_session`` raises.
        """
        outbox = self._sender()
        session = str(uuid.uuid4())
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[session] = fut
        try:
            with _nats_errors(f"request to {to!r}"):
                await outbox.open(session, to, payload, content_type=content_type, trace_id=trace_id)
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    return fut.result()
                raise MeshTimeout(
                    f"no reply from {to!r} in session {session} within {timeout}s", timeout=timeout
                ) from None
        finally:
            self._waiters.pop(session, None)

    # ── discovery ───────────────────────────────────────────────────

    async def introspect(self, handle: str) -> Introspected:
        """The handle's manifest and liveness; ``found=False`` if it is not registered."""
        validate_handle(handle)
        registry = await self._registry_ready()
        with _nats_errors(f"introspect {handle!r}"):
            current = await registry.get(handle)
        if current is None:
            return Introspected(handle=handle, found=False)
        record = current[0]
        return Introspected(handle=handle, found=True, manifest=record.manifest, online=record.is_live())

    async def list_handles(self, *, tags: Iterable[str] | None = None, online_only: bool = False) -> list[HandleEntry]:
        """Registered handles (sorted) whose manifest has every tag in ``tags``."""
        registry = await self._registry_ready()
        with _nats_errors("list_handles"):
            records = await registry.all()
        now = time.time()
        required = tuple(tags or ())
        out = [
            HandleEntry(handle=r.handle, manifest=r.manifest, online=r.is_live(now))
            for r in records
            if matches_tags(r.manifest.tags if r.manifest else (), required)
        ]
        if online_only:
            out = [e for e in out if e.online]
        return sorted(out, key=lambda e: e.handle)

    async def find_handles(
        self,
        *,
        capabilities: Iterable[str] | None = None,
        domains: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        command_name: str = "",
        version: str = "",
        limit: int = 0,
        online_only: bool = False,
    ) -> list[HandleMatch]:
        """Ranked discovery with tailbus's scoring (see ``mesh.registry.find_matches``)."""
        registry = await self._registry_ready()
        with _nats_errors("find_handles"):
            records = await registry.all()
        now = time.time()
        entries = {r.handle: (r.manifest, r.is_live(now)) for r in records}
        if online_only:
            entries = {h: v for h, v in entries.items() if v[1]}
        return find_matches(entries, capabilities=capabilities or (), domains=domains or (), tags=tags or (),
                            command_name=command_name, version=version, limit=limit)

    # ── handlers ────────────────────────────────────────────────────

    def on_message(self, fn: H) -> H:
        """Decorator: set the handler for incoming messages (sync handlers run on a worker thread)."""
        self._dispatch.handler = fn
        return fn

    # ── internals ───────────────────────────────────────────────────

    def _sender(self) -> Sender:
        """The sender, once registered; raises NotRegistered before ``register()`` and after ``close()``."""
        if self._record is None or self._closed or self._outbox is None:
            raise NotRegistered(self._handle)
        return self._outbox

    async def _registry_ready(self) -> Registry:
        await self.start()
        assert self._registry is not None
        return self._registry

    # ── internals: registry ─────────────────────────────────────────

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            record, registry = self._record, self._registry
            if record is None or registry is None:
                return
            try:
                fresh = replace(record, heartbeat_at=time.time())
                revision = await registry.heartbeat(fresh, self._record_revision)
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
                log.debug("mesh agent %s: heartbeat failed (%s); retrying", self._handle, type(exc).__name__)
                continue
            if revision is None:
                log.error("mesh agent %s: handle was claimed by another agent; heartbeats stopped", self._handle)
                return
            self._record, self._record_revision = fresh, revision

    async def _release_handle(self) -> None:
        record, self._record = self._record, None
        if record is None or self._registry is None or self._js is None:
            return
        try:
            if self._ephemeral:
                await self._registry.remove(self._handle, self._owner)
                durable = durable_name(self._handle)
                await self._denials.guard(remove_inbox(self._js, self._handle), "publish", [
                    f"$JS.API.CONSUMER.INFO.{STREAM_NAME}.{durable}",
                    f"$JS.API.CONSUMER.DELETE.{STREAM_NAME}.{durable}",
                    f"$JS.API.STREAM.PURGE.{STREAM_NAME}",
                ])
            else:
                offline = replace(record, heartbeat_at=time.time(), online=False)
                await self._registry.heartbeat(offline, self._record_revision)
        except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
            log.warning("mesh agent %s: could not update the registry or remove the inbox on close: %s",
                        self._handle, exc if isinstance(exc, PermissionDenied) else type(exc).__name__)

    async def _on_nats_error(self, exc: Exception) -> None:
        if not self._denials.feed(exc):
            log.debug("mesh agent %s: NATS error %s: %s", self._handle, type(exc).__name__, exc)
