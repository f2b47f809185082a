"""AsyncAgent: a tailbus-style agent on NATS JetStream (handles, sessions, rooms, trace ids, durable inboxes).

Delivery contract (see docs/mesh.md, "Delivery guarantees" and "Semantics"):

* a message is acked only after the handler returned; a crash before that means redelivery after
  ``ack_wait`` s. A handler that raises has its message logged and dropped, as in tailbus, unless it
  raises :class:`~mesh.errors.Retry` (or the agent was made with ``retry_on_error=True``): then it is
  delivered again, up to ``max_deliver`` times. Handlers should be idempotent (``Message.message_id``
  and ``RoomEvent.event_id`` are unique).
* at most ``max_in_flight`` handlers run at once (the consumers' MaxAckPending and a semaphore);
  the server holds everything else, nothing queues unboundedly in the process, nothing is dropped.
* a message that a pending ``request()`` consumes is acked at once and never reaches ``on_message``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from .auth import NatsAuth
from .claim import ClaimFile, claim_path, default_state_dir
from .connection import Denials, connect, servers_from_env
from .constants import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DELIVER,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PAYLOAD,
    REGISTRY_BUCKET,
    SESSIONS_BUCKET,
    STREAM_NAME,
)
from .dispatch import Dispatcher, MessageHandler
from .errors import AgentClosed, MeshError, MeshTimeout, NotRegistered, PermissionDenied
from .handles import deliver_subject, durable_name, inbox_filter, reply_prefix, validate_handle
from .jetstream import ensure_bucket, ensure_consumer, ensure_stream, remove_inbox
from .operation import JS_TIMEOUT, operation
from .presence import Presence
from .registry import Registry, find_matches, matches_tags
from .room_methods import RoomMethods
from .rooms import Rooms
from .sender import Sender
from .sessions import SessionBook, SessionStore
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
    SessionInfo,
)

__all__ = ["AsyncAgent", "MessageHandler"]

log = logging.getLogger(__name__)

H = TypeVar("H", bound=MessageHandler)

#: Session records ``list_sessions`` reads at once.
_LIST_CONCURRENCY = 32


class AsyncAgent(RoomMethods):
    """An agent on the mesh, addressed by ``handle``.

    ``servers``: NATS URL(s); default ``$NATS_URL`` (comma-separated), else ``nats://127.0.0.1:4222``.
    ``auth``: credentials and TLS (:class:`~mesh.auth.NatsAuth`); a server that refuses them makes
    ``start()`` raise AuthenticationError at once. ``max_in_flight``: concurrent handlers (and the
    consumers' MaxAckPending). ``max_payload``: limit on a payload, UTF-8 bytes. ``connect_options``:
    passed to ``nats.connect`` after ``auth``'s options, so they win (callbacks, other auth...);
    reconnects forever unless they say otherwise. ``max_deliver``: deliveries of one message before it
    is terminated. ``ack_wait``: seconds before an unacked message is redelivered (slow handlers send
    in-progress acks every ``ack_wait / 3`` s, so they are not). ``heartbeat_interval``: seconds between
    registry heartbeats; the handle counts as offline after three missed ones. ``drain_timeout``:
    seconds ``close()`` waits for running handlers by default. ``retry_on_error``: a handler exception
    means "deliver again" (up to ``max_deliver``) instead of "log and drop". ``state_dir``: where the
    claim file that lets a restarted agent take its handle back at once is kept (default
    ``$MESH_STATE_DIR``, ``$XDG_STATE_HOME/mesh`` or ``~/.local/state/mesh``); ``reclaim=False``: keep
    none. ``socket``, ``binary``: tailbus's daemon socket and bridge binary, accepted so tailbus code
    runs unchanged, and ignored (debug line).

    Raises InvalidHandle for a malformed ``handle``; ValueError for a limit out of range.
    """

    def __init__(
        self,
        handle: str,
        *,
        servers: str | Iterable[str] | None = None,
        manifest: Manifest | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        connect_options: Mapping[str, Any] | None = None,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        ack_wait: float = DEFAULT_ACK_WAIT,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        auth: NatsAuth | None = None,
        retry_on_error: bool = False,
        state_dir: str | os.PathLike[str] | None = None,
        reclaim: bool = True,
        socket: str | None = None,
        binary: str | None = None,
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
        if drain_timeout < 0:
            raise ValueError("drain_timeout must be >= 0")
        if servers is None:
            self._servers = servers_from_env()
        else:
            self._servers = [servers] if isinstance(servers, str) else list(servers)
        self._socket, self._binary = socket, binary  # tailbus's; kept so code that prints them still runs
        if socket is not None or binary is not None:
            log.debug("mesh agent %s: tailbus options socket=%r binary=%r ignored; connecting to NATS at %s",
                      self._handle, socket, binary, ", ".join(self._servers))
        self._manifest = manifest
        self._max_in_flight = max_in_flight
        self._max_payload = max_payload
        self._connect_options = dict(connect_options or {})
        self._auth = auth
        self._denials = Denials(self._handle)
        self._max_deliver = max_deliver
        self._ack_wait = float(ack_wait)
        self._heartbeat_interval = float(heartbeat_interval)
        self._drain_timeout = float(drain_timeout)
        self._claim_file = (ClaimFile(claim_path(Path(state_dir) if state_dir is not None else default_state_dir(),
                                                 self._servers, self._handle)) if reclaim else None)

        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._registry: Registry | None = None
        self._sessions: SessionStore | None = None
        self._outbox: Sender | None = None
        self._presence: Presence | None = None
        self._rooms: Rooms | None = None
        self._rooms_problem = "the agent is not registered"
        self._sub: Subscription | None = None
        self._ephemeral = False
        self._book = SessionBook()
        self._waiters: dict[str, asyncio.Future[Message]] = {}
        self._dispatch = Dispatcher(self._handle, max_in_flight=max_in_flight, max_deliver=max_deliver,
                                    ack_wait=self._ack_wait, waiters=self._waiters, retry_on_error=retry_on_error,
                                    on_session=self._book.note)
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
        return self._presence is not None and self._presence.record is not None and not self._closed

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

        Raises AuthenticationError (credentials refused, TLS failed), PermissionDenied, AgentClosed,
        MeshError (cannot connect, JetStream unavailable).
        """
        if self._closed:
            raise AgentClosed(self._handle)
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
            return (Registry(js, await ensure_bucket(js, REGISTRY_BUCKET)),
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
        self._registry, self._sessions = registry, sessions
        self._presence = Presence(self._handle, registry=registry, denials=self._denials,
                                  interval=self._heartbeat_interval, claim_file=self._claim_file)
        self._outbox = Sender(self._handle, nc=nc, js=js, registry=registry, sessions=sessions,
                              denials=self._denials, max_payload=self._max_payload)
        log.debug("mesh agent %s connected to %s", self._handle, nc.connected_url)
        return self

    async def close(self, *, grace: float | None = None) -> None:
        """Drain and disconnect; idempotent.

        Stops taking deliveries, waits up to ``grace`` s (default ``drain_timeout``, 5 s) for running
        handlers (the rest are cancelled and their messages nak'ed, so delivered again at once to the
        next holder of the handle), fails pending ``request()`` calls with AgentClosed, then marks the
        handle offline (keeping its durable inbox) or, for an ephemeral handle, removes its registry
        entry, its consumers and whatever is left in its inbox.
        """
        if self._closed:
            return
        self._dispatch.closing = True
        if self._stopped is not None:
            self._stopped.set()
        for session, fut in list(self._waiters.items()):
            if not fut.done():
                fut.set_exception(AgentClosed(self._handle, f"while waiting on session {session}"))
        self._waiters.clear()
        if self._presence is not None:
            await self._presence.stop_heartbeat()
        if self._sub is not None:
            try:  # stop deliveries; what is already buffered is nak'ed (see Dispatcher) for quick redelivery
                await asyncio.wait_for(self._sub.drain(), 5.0)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.debug("mesh agent %s: draining the inbox subscription failed: %s", self._handle,
                          type(exc).__name__)
            self._sub = None
        await self._dispatch.drain(self._drain_timeout if grace is None else grace)
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
        """Claim the handle, publish the manifest, bind the durable inbox and room consumer, and start
        heartbeating.

        The first claim wins: raises HandleTaken while another live agent holds the handle. A
        handle whose owner closed, or stopped heartbeating, can be claimed again; and the same agent
        restarting on the same host (same claim file, see ``state_dir``) takes it back at once. Its
        durable inbox is resumed, so queued messages are delivered. ``ephemeral=True``: ``close()``
        removes the registry entry, the consumer and the leftover inbox (for short-lived CLI clients;
        they do not take part in rooms). Set ``on_message`` first if this agent serves requests.
        Calling it again re-publishes. Raises PermissionDenied, MeshError.
        """
        await self.start()
        with operation("register", f"register {self._handle!r}"):
            return await self._register(manifest if manifest is not None else self._manifest, ephemeral)

    async def _register(self, manifest: Manifest | None, ephemeral: bool) -> Registered:
        assert self._js is not None and self._nc is not None and self._presence is not None
        await self._presence.claim(manifest, ephemeral=ephemeral)
        self._ephemeral = ephemeral
        self._manifest = manifest
        try:
            consumer_api = f"$JS.API.CONSUMER.CREATE.{STREAM_NAME}.{durable_name(self._handle)}." \
                           f"{inbox_filter(self._handle)}"
            await self._denials.guard(
                ensure_consumer(self._js, self._handle, max_in_flight=self._max_in_flight,
                                max_deliver=self._max_deliver, ack_wait=self._ack_wait),
                "publish", [consumer_api])
            if not ephemeral:
                await self._attach_rooms()
            if self._sub is None:
                subject = deliver_subject(self._handle)
                nc = self._nc

                async def subscribe() -> Subscription:
                    sub = await nc.subscribe(subject, queue=self._handle, cb=self._dispatch.on_delivery)
                    await nc.flush(int(JS_TIMEOUT))  # a denied subscription is reported before the PONG
                    await asyncio.sleep(0)
                    return sub

                self._sub = await self._denials.guard(subscribe(), "subscribe", [subject])
        except Exception:
            await self._presence.withdraw()
            raise
        self._presence.start_heartbeat()
        log.info("mesh agent %s registered (ephemeral=%s, max_in_flight=%d, rooms=%s)", self._handle, ephemeral,
                 self._max_in_flight, "yes" if self._rooms is not None else "no")
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
        Replies in the session reach ``on_message`` only after this has returned (as in tailbus).
        """
        with operation("open", f"open_session to {to!r}"):
            outbox = self._sender()
            session = str(uuid.uuid4())
            self._book.note(session)
            self._dispatch.hold(session)  # its replies reach on_message only after this returns
            try:
                return await outbox.open(session, to, payload, content_type=content_type, trace_id=trace_id)
            finally:
                self._dispatch.release(session)

    async def send(self, session: str, payload: str, *, content_type: str = "text/plain") -> Sent:
        """Send ``payload`` to the other participant of ``session`` (either side may send).

        Raises SessionNotFound, NotParticipant, SessionClosed, PayloadTooLarge, NotRegistered.
        """
        with operation("send", f"send in {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "message")
        self._book.note(session)
        return Sent(message_id=message_id, sequence=seq)

    async def resolve(self, session: str, payload: str = "", *, content_type: str = "text/plain") -> Resolved:
        """Close ``session`` with a final message (either side may resolve; nothing after it).

        Raises SessionNotFound, NotParticipant, SessionClosed (already resolved),
        PayloadTooLarge, NotRegistered.
        """
        with operation("resolve", f"resolve {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "session_resolve")
        self._book.note(session)
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
        MeshTimeout (``.timeout``) if nothing arrives within ``timeout`` s (the session stays open,
        and whatever arrives in it later is dropped with a debug line), AgentClosed when the agent
        closes meanwhile, plus everything ``open_session`` raises.
        """
        outbox = self._sender()
        session = str(uuid.uuid4())
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[session] = fut
        self._book.note(session)
        answered = False
        try:
            with operation("open", f"request to {to!r}"):
                await outbox.open(session, to, payload, content_type=content_type, trace_id=trace_id)
            try:
                reply = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    answered = True
                    return fut.result()
                err = MeshTimeout(f"no reply from {to!r} in session {session} within {timeout}s", timeout=timeout)
                err.request_type = "open"
                raise err from None
            answered = True
            return reply
        finally:
            self._waiters.pop(session, None)
            if not answered:
                self._dispatch.abandon(session)

    async def list_sessions(self) -> list[SessionInfo]:
        """The sessions this agent has taken part in since it started (opened, sent or received in; the
        1,024 most recent), with their state as stored now (``"open"`` or ``"resolved"``), oldest
        first. Sessions whose record expired (7 days) are left out. Raises NotRegistered."""
        self._sender()
        sessions = self._sessions
        assert sessions is not None
        slots = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def read(session: str) -> SessionInfo | None:
            async with slots:
                state = await sessions.current(session)
            if state is None:
                return None
            return SessionInfo(session=session, from_handle=state.from_handle, to_handle=state.to_handle,
                               state="resolved" if state.resolved else "open", trace_id=state.trace_id)

        with operation("sessions", "list_sessions"):
            found = await asyncio.gather(*(read(s) for s in self._book.ids()))
        return [info for info in found if info is not None]

    # ── discovery ───────────────────────────────────────────────────

    async def introspect(self, handle: str) -> Introspected:
        """The handle's manifest and liveness; ``found=False`` if it is not registered (an offline handle
        is found, with ``online=False``: messages to it wait in its inbox)."""
        validate_handle(handle)
        registry = await self._registry_ready()
        with operation("introspect", f"introspect {handle!r}"):
            current = await registry.get(handle)
        if current is None:
            return Introspected(handle=handle, found=False)
        record = current[0]
        return Introspected(handle=handle, found=True, manifest=record.manifest, online=record.is_live())

    async def list_handles(self, *, tags: Iterable[str] | None = None, online_only: bool = True) -> list[HandleEntry]:
        """Registered handles (sorted) whose manifest has every tag in ``tags``; only live ones unless
        ``online_only=False``."""
        registry = await self._registry_ready()
        with operation("list", "list_handles"):
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
        online_only: bool = True,
    ) -> list[HandleMatch]:
        """Ranked discovery with tailbus's scoring (see ``mesh.registry.find_matches``); only live
        handles unless ``online_only=False``."""
        registry = await self._registry_ready()
        with operation("find", "find_handles"):
            records = await registry.all()
        now = time.time()
        entries = {r.handle: (r.manifest, r.is_live(now)) for r in records}
        if online_only:
            entries = {h: v for h, v in entries.items() if v[1]}
        return find_matches(entries, capabilities=capabilities or (), domains=domains or (), tags=tags or (),
                            command_name=command_name, version=version, limit=limit)

    # ── handlers ────────────────────────────────────────────────────

    def on_message(self, fn: H) -> H:
        """Decorator: set the handler for incoming messages and room events (sync handlers run on worker
        threads, those of one session or room one at a time, in order)."""
        self._dispatch.handler = fn
        return fn

    # ── internals ───────────────────────────────────────────────────

    def _sender(self) -> Sender:
        """The sender, once registered; raises NotRegistered before ``register()``, AgentClosed after ``close()``."""
        if self._closed:
            raise AgentClosed(self._handle)
        if not self.is_registered or self._outbox is None:
            raise NotRegistered(self._handle)
        return self._outbox

    async def _registry_ready(self) -> Registry:
        await self.start()
        assert self._registry is not None
        return self._registry

    async def _release_handle(self) -> None:
        presence, js = self._presence, self._js
        if presence is None or js is None:
            return
        try:
            await presence.release(remove=self._ephemeral)
            if self._ephemeral:
                durable = durable_name(self._handle)
                await self._denials.guard(remove_inbox(js, self._handle, rooms=self._rooms is not None), "publish", [
                    f"$JS.API.CONSUMER.INFO.{STREAM_NAME}.{durable}",
                    f"$JS.API.CONSUMER.DELETE.{STREAM_NAME}.{durable}",
                    f"$JS.API.STREAM.PURGE.{STREAM_NAME}",
                ])
        except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
            log.warning("mesh agent %s: could not update the registry or remove the inbox on close: %s",
                        self._handle, exc if isinstance(exc, PermissionDenied) else type(exc).__name__)

    async def _on_nats_error(self, exc: Exception) -> None:
        if not self._denials.feed(exc):
            log.debug("mesh agent %s: NATS error %s: %s", self._handle, type(exc).__name__, exc)
