"""AsyncAgent: a tailbus-style agent on NATS JetStream (handles, sessions, rooms, trace ids, durable inboxes).

Delivery contract (see docs/mesh.md, "Delivery guarantees" and "Semantics"):

* a message is acked only after the handler returned; a crash before that means redelivery after
  ``ack_wait`` s. A handler that raises has its message logged and dropped, as in tailbus, unless it
  raises :class:`~mesh.errors.Retry` (or the agent was made with ``retry_on_error=True``): then it is
  delivered again, up to ``max_deliver`` times. Handlers should be idempotent (``Message.message_id``
  and ``RoomEvent.event_id`` are unique).
* at most ``max_in_flight`` handlers run at once per lane (the consumers' MaxAckPending and a semaphore);
  the server holds everything else, nothing queues unboundedly in the process, nothing is dropped.
* a message that a pending ``request()`` consumes is acked at once and never reaches ``on_message``;
  it is accepted only from the handle the session was opened to (the sender its subject names).
* an agent that loses its handle's claim stops consuming at once, acknowledges nothing more, and says so:
  ``run_forever()`` raises ClaimLost and ``on_claim_lost`` is called.
* agents made with the same ``replica_key`` hold their handle together as a replica group (see
  :mod:`mesh.replicas`): each message to the handle reaches exactly one live member.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import nats.errors
import nats.js.errors
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
    PRIORITY_STREAM,
    STREAM_NAME,
)
from .discovery_methods import DiscoveryMethods
from .dispatch import Dispatcher, MessageHandler, Waiter
from .errors import (
    AgentClosed,
    ClaimLost,
    MeshError,
    MeshTimeout,
    NotRegistered,
    PermissionDenied,
)
from .foundations import Foundations
from .handles import deliver_subject, durable_name, priority_durable_name, reply_prefix, validate_handle
from .jetstream import MAX_REPLICAS, remove_inbox, replicas_from_env
from .operation import JS_TIMEOUT, operation, patient
from .presence import Presence
from .quotas import Quotas
from .registry import Registry
from .replicas import default_replica_id, validate_replica_id, validate_replica_key
from .room_methods import RoomMethods
from .rooms import Rooms
from .sender import Sender
from .session_methods import SessionMethods
from .sessions import SessionBook, SessionStore
from .types import (
    Manifest,
    Registered,
)

__all__ = ["AsyncAgent", "ClaimLostCallback", "MessageHandler"]

log = logging.getLogger(__name__)

H = TypeVar("H", bound=MessageHandler)
#: ``on_claim_lost(err)``: a plain function or a coroutine function, called once with the ClaimLost.
ClaimLostCallback = Callable[[ClaimLost], Awaitable[None]] | Callable[[ClaimLost], None]



class AsyncAgent(SessionMethods, RoomMethods, DiscoveryMethods):
    """An agent on the mesh, addressed by ``handle``.

    ``servers``: NATS URL(s); default ``$NATS_URL`` (comma-separated), else ``nats://127.0.0.1:4222``.
    ``auth``: credentials and TLS (:class:`~mesh.auth.NatsAuth`); a server that refuses them makes
    ``start()`` raise AuthenticationError at once. ``max_in_flight``: concurrent handlers per lane (and the
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
    none. ``quotas``: the limits of the streams and buckets this agent creates, if it is the first
    (:class:`~mesh.quotas.Quotas`; defaults in docs/mesh.md, "Quotas"). ``replicas``: copies of every
    stream and bucket it creates (1-5; default ``$MESH_REPLICAS``, else 1; 3 on a cluster).
    ``on_claim_lost``: called (sync or async) with the ClaimLost when another agent takes the handle.
    ``replica_key``: a secret (at least 16 characters) shared by the replicas of a handle: agents with the
    same key hold the handle together (a replica group, :mod:`mesh.replicas`), each message reaching exactly
    one live member; an agent without it, or with another, gets HandleTaken. ``replica_id``: this member's id
    in the group (``^[A-Za-z0-9_-]{1,64}$``; default ``<hostname>-<pid>``); only with ``replica_key``.
    ``socket``, ``binary``: tailbus's daemon socket and bridge binary, accepted so tailbus code runs
    unchanged, and ignored (debug line).

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
        quotas: Quotas | None = None,
        replicas: int | None = None,
        on_claim_lost: ClaimLostCallback | None = None,
        replica_key: str | None = None,
        replica_id: str | None = None,
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
        if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be from 1 to {MAX_REPLICAS}")
        if replica_key is not None:
            validate_replica_key(replica_key)
            self._replica_id = validate_replica_id(replica_id) if replica_id is not None else default_replica_id()
        elif replica_id is not None:
            raise ValueError("replica_id is the id of a member of a replica group: give replica_key too")
        else:
            self._replica_id = ""
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
        self._quotas = quotas or Quotas()
        self._replicas = replicas if replicas is not None else replicas_from_env()
        self._on_claim_lost = on_claim_lost
        self._replica_key = replica_key
        claim_name = f"{self._handle}@{self._replica_id}" if replica_key is not None else self._handle
        self._claim_file = (ClaimFile(claim_path(Path(state_dir) if state_dir is not None else default_state_dir(),
                                                 self._servers, claim_name)) if reclaim else None)

        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._registry: Registry | None = None
        self._sessions: SessionStore | None = None
        self._outbox: Sender | None = None
        self._presence: Presence | None = None
        self._foundations: Foundations | None = None
        self._rooms: Rooms | None = None
        self._rooms_problem = "the agent is not registered"
        self._sub: Subscription | None = None
        self._ephemeral = False
        self._book = SessionBook()
        self._waiters: dict[str, Waiter] = {}
        self._dispatch = Dispatcher(self._handle, max_in_flight=max_in_flight, max_deliver=max_deliver,
                                    ack_wait=self._ack_wait, waiters=self._waiters, retry_on_error=retry_on_error,
                                    on_session=self._book.note)
        self._stopped: asyncio.Event | None = None
        self._lost: ClaimLost | None = None
        self._closed = False

    # ── properties ──────────────────────────────────────────────────

    @property
    def handle(self) -> str:
        """This agent's handle."""
        return self._handle

    @property
    def is_registered(self) -> bool:
        """True between a successful ``register()`` and ``close()`` (or the loss of the handle's claim)."""
        return (self._presence is not None and self._presence.record is not None and not self._closed
                and self._lost is None)

    @property
    def is_connected(self) -> bool:
        """True while the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    @property
    def max_in_flight(self) -> int:
        """The limit on concurrently running handlers (per lane)."""
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Handlers running right now."""
        return self._dispatch.running

    @property
    def claim_lost(self) -> ClaimLost | None:
        """The ClaimLost if another agent took this agent's handle, else None."""
        return self._lost

    @property
    def replica_id(self) -> str:
        """This agent's id in its handle's replica group; "" when it holds its handle alone."""
        return self._replica_id

    @property
    def replicas(self) -> int:
        """Copies of each stream and bucket this agent creates."""
        return self._replicas

    # ── lifecycle ───────────────────────────────────────────────────

    async def start(self) -> Self:
        """Connect and make sure the streams and KV buckets exist; idempotent.

        Raises AuthenticationError (credentials refused, TLS failed), PermissionDenied, AgentClosed,
        MeshError (cannot connect, JetStream unavailable for 30 s).
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
        foundations = Foundations(self._handle, js=js, denials=self._denials, quotas=self._quotas,
                                  replicas=self._replicas, max_in_flight=self._max_in_flight,
                                  max_deliver=self._max_deliver, ack_wait=self._ack_wait)
        try:
            # The JetStream API answers on the reply inboxes: a server that does not let this user
            # subscribe to them would otherwise show up as timeouts only.
            registry_kv, sessions_kv = await self._denials.guard(
                patient(foundations.shared, self._handle, "JetStream"), "subscribe", [f"{options['inbox_prefix']}.>"])
        except PermissionDenied:
            await nc.close()
            self._nc = None
            raise
        except (nats.errors.Error, MeshTimeout) as exc:
            await nc.close()
            self._nc = None
            raise MeshError(f"JetStream unavailable at {self._servers}: {type(exc).__name__}: {exc}") from exc
        registry = self._registry = Registry(js, registry_kv)
        sessions = self._sessions = SessionStore(sessions_kv, self._handle)
        self._foundations = foundations
        self._presence = Presence(self._handle, registry=registry, denials=self._denials,
                                  interval=self._heartbeat_interval, claim_file=self._claim_file,
                                  replica_key=self._replica_key, replica_id=self._replica_id, on_lost=self._claim_was_lost, restore=foundations.restore, watch=foundations.watch)
        self._replica_key = None  # the presence hashes it on the first claim and keeps only the hash
        self._outbox = Sender(self._handle, nc=nc, js=js, registry=registry, sessions=sessions,
                              denials=self._denials, max_payload=self._max_payload, quotas=self._quotas,
                              handling=self._dispatch.handling, claim_guard=self._claim_guard)
        self._dispatch.sessions = sessions
        self._dispatch.confirm = self._presence.confirm
        log.debug("mesh agent %s connected to %s", self._handle, nc.connected_url)
        return self

    async def close(self, *, grace: float | None = None) -> None:
        """Drain and disconnect; idempotent.

        Stops taking deliveries, waits up to ``grace`` s (default ``drain_timeout``, 5 s) for running
        handlers (the rest are cancelled and their messages nak'ed, so delivered again at once to the
        next holder of the handle), fails pending ``request()`` calls with AgentClosed, then marks the
        handle offline (keeping its durable inbox) or, for an ephemeral handle, removes its registry
        entry, its consumers and whatever is left in its inbox. After the claim was lost nothing of the
        handle's is touched (it is the new owner's).
        """
        if self._closed:
            return
        self._dispatch.closing = True
        if self._stopped is not None:
            self._stopped.set()
        for session, waiter in list(self._waiters.items()):
            if not waiter.future.done():
                waiter.future.set_exception(AgentClosed(self._handle, f"while waiting on session {session}"))
        self._waiters.clear()
        if self._foundations is not None:
            self._foundations.forget()
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
        """Block until ``close()`` is called (handlers run in the background meanwhile). Raises ClaimLost
        when another agent took the handle (this one has stopped consuming by then)."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()
        if self._lost is not None:
            raise self._lost

    # ── registration ────────────────────────────────────────────────

    async def register(self, *, manifest: Manifest | None = None, ephemeral: bool = False) -> Registered:
        """Claim the handle, publish the manifest, bind the durable inboxes and room consumer, and start
        heartbeating.

        The first claim wins: raises HandleTaken while another live agent holds the handle. A
        handle whose owner closed, or stopped heartbeating, can be claimed again, and its consumers are
        taken over (the old owner's deliveries and acknowledgements are void); and the same agent
        restarting on the same host (same claim file, see ``state_dir``) takes it back at once. Its
        durable inbox is resumed, so queued messages are delivered. ``ephemeral=True``: ``close()``
        removes the registry entry, the consumers and the leftover inbox (for short-lived CLI clients;
        they do not take part in rooms). Set ``on_message`` first if this agent serves requests.
        Calling it again re-publishes. With ``replica_key``, joins (or founds) the handle's replica group
        instead; HandleTaken then says what holds the handle. Raises PermissionDenied, ClaimLost, MeshError;
        ValueError for ``ephemeral=True`` with ``replica_key``.
        """
        if ephemeral and self._replica_id:
            raise ValueError("a replica group's handle cannot be ephemeral (its inbox outlives any one member)")
        await self.start()
        with operation("register", f"register {self._handle!r}"):
            return await self._register(manifest if manifest is not None else self._manifest, ephemeral)

    async def _register(self, manifest: Manifest | None, ephemeral: bool) -> Registered:
        assert self._js is not None and self._nc is not None and self._presence is not None
        assert self._foundations is not None
        presence, foundations = self._presence, self._foundations
        await presence.claim(manifest, ephemeral=ephemeral)
        self._ephemeral = ephemeral
        self._manifest = manifest
        deliver = deliver_subject(self._handle, presence.holder)
        try:
            for spec in foundations.inbox_specs(deliver):
                api = f"$JS.API.CONSUMER.%s.{spec.stream}.{spec.name}"
                await self._denials.guard(
                    patient(functools.partial(foundations.consumer, spec), self._handle, f"consumer {spec.name}"),
                    "publish", [f"{api % 'CREATE'}.{spec.filter_subject}", api % "INFO", api % "DELETE"])
            if not ephemeral:
                await self._attach_rooms(deliver)
            if self._sub is None:
                nc = self._nc

                async def subscribe() -> Subscription:
                    sub = await nc.subscribe(deliver, queue=self._handle, cb=self._dispatch.on_delivery)
                    await nc.flush(int(JS_TIMEOUT))  # a denied subscription is reported before the PONG
                    await asyncio.sleep(0)
                    return sub

                self._sub = await self._denials.guard(subscribe(), "subscribe", [deliver])
        except Exception:
            await presence.withdraw()
            raise
        presence.start_heartbeat()
        log.info("mesh agent %s registered (ephemeral=%s, max_in_flight=%d, rooms=%s, replicas=%d%s)", self._handle,
                 ephemeral, self._max_in_flight, "yes" if self._rooms is not None else "no", self._replicas,
                 f", replica group member {self._replica_id}" if self._replica_id else "")
        return Registered(handle=self._handle, ephemeral=ephemeral)

    async def _claim_guard(self) -> None:
        """Raise ClaimLost when this agent may no longer act as its handle (see Presence.confirm)."""
        presence = self._presence
        if presence is not None and not await presence.confirm():
            raise presence.lost or ClaimLost(self._handle)

    async def _claim_was_lost(self, err: ClaimLost) -> None:
        """Another agent holds the handle now: stop consuming at once, acknowledge nothing more, fail the
        waiting requests, then tell the owner of this agent (``on_claim_lost``, ``run_forever()``)."""
        self._lost = err
        await self._dispatch.fence()
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, OSError) as exc:
                log.debug("mesh agent %s: unsubscribing failed: %s", self._handle, type(exc).__name__)
        if self._foundations is not None:
            self._foundations.forget()
        for session, waiter in list(self._waiters.items()):
            if not waiter.future.done():
                waiter.future.set_exception(ClaimLost(self._handle, f"while waiting on session {session}"))
        self._waiters.clear()
        if self._on_claim_lost is not None:
            try:
                result = self._on_claim_lost(err)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("mesh agent %s: the on_claim_lost callback failed", self._handle)
        if self._stopped is not None:
            self._stopped.set()

    # ── handlers ────────────────────────────────────────────────────

    def on_message(self, fn: H) -> H:
        """Decorator: set the handler for incoming messages and room events (sync handlers run on worker
        threads, those of one session or room one at a time, in order)."""
        self._dispatch.handler = fn
        return fn

    # ── internals ───────────────────────────────────────────────────

    def _sender(self) -> Sender:
        """The sender, once registered; raises NotRegistered before ``register()``, AgentClosed after
        ``close()``, ClaimLost after the handle was taken."""
        if self._closed:
            raise AgentClosed(self._handle)
        if self._lost is not None:
            raise self._lost
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
            if self._ephemeral and self._lost is None:
                subjects = []
                for stream, name in ((STREAM_NAME, durable_name(self._handle)),
                                     (PRIORITY_STREAM, priority_durable_name(self._handle))):
                    subjects += [f"$JS.API.CONSUMER.INFO.{stream}.{name}", f"$JS.API.CONSUMER.DELETE.{stream}.{name}",
                                 f"$JS.API.STREAM.PURGE.{stream}"]
                await self._denials.guard(remove_inbox(js, self._handle), "publish", subjects)
        except (nats.errors.Error, MeshError, TimeoutError, OSError) as exc:
            log.warning("mesh agent %s: could not update the registry or remove the inbox on close: %s",
                        self._handle, exc if isinstance(exc, PermissionDenied) else type(exc).__name__)

    async def _on_nats_error(self, exc: Exception) -> None:
        if not self._denials.feed(exc):
            log.debug("mesh agent %s: NATS error %s: %s", self._handle, type(exc).__name__, exc)
