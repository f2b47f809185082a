"""SyncAgent: the AsyncAgent API, blocking, for scripts. One event loop runs on a private thread.

Handlers given to ``on_message`` should be plain functions: they run on worker threads (those of one
session or room one at a time, in order) and may call the blocking methods (``send``, ``resolve``,
``request``, ``post_room_message`` ...) of the same SyncAgent. Calling a blocking method from the
agent's own loop thread (an ``async def`` handler) raises MeshError instead of deadlocking.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from .agent import AsyncAgent, ClaimLostCallback, MessageHandler
from .auth import NatsAuth
from .constants import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DELIVER,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_ROOM_MAX_BYTES,
    DEFAULT_ROOM_MAX_EVENTS,
)
from .errors import AgentClosed
from .loop_thread import LoopThread
from .quotas import Quotas
from .types import (
    HandleEntry,
    HandleMatch,
    Introspected,
    Manifest,
    Message,
    Opened,
    Registered,
    Resolved,
    RoomEvent,
    RoomInfo,
    RoomPosted,
    Sent,
    SessionInfo,
)

__all__ = ["SyncAgent"]

T = TypeVar("T")
H = TypeVar("H", bound=MessageHandler)


class SyncAgent:
    """Blocking twin of AsyncAgent; same constructor arguments, same methods, same errors."""

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
        self._agent = AsyncAgent(
            handle, servers=servers, manifest=manifest, max_in_flight=max_in_flight, max_payload=max_payload,
            connect_options=connect_options, max_deliver=max_deliver, ack_wait=ack_wait,
            heartbeat_interval=heartbeat_interval, drain_timeout=drain_timeout, auth=auth,
            retry_on_error=retry_on_error, state_dir=state_dir, reclaim=reclaim, quotas=quotas, replicas=replicas,
            on_claim_lost=on_claim_lost, replica_key=replica_key, replica_id=replica_id, socket=socket, binary=binary,
        )
        self._socket, self._binary = socket, binary  # tailbus's; kept so code that prints them still runs
        self._thread = LoopThread(f"mesh-sync-{handle}")
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise AgentClosed(self._agent.handle)
        return self._thread.run(coro, owner="SyncAgent")

    @property
    def handle(self) -> str:
        """This agent's handle."""
        return self._agent.handle

    @property
    def is_registered(self) -> bool:
        """True between ``register()`` and ``close()``."""
        return self._agent.is_registered

    @property
    def async_agent(self) -> AsyncAgent:
        """The AsyncAgent underneath (its coroutines must run on this agent's loop)."""
        return self._agent

    def start(self) -> Self:
        """Connect; idempotent."""
        self._call(self._agent.start())
        return self

    def close(self, *, grace: float | None = None) -> None:
        """Drain (up to ``grace`` s, default ``drain_timeout``), disconnect and stop the loop thread; idempotent."""
        if self._closed:
            return
        try:
            self._call(self._agent.close(grace=grace))
        finally:
            self._closed = True
            self._thread.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def register(self, *, manifest: Manifest | None = None, ephemeral: bool = False) -> Registered:
        """See AsyncAgent.register."""
        return self._call(self._agent.register(manifest=manifest, ephemeral=ephemeral))

    def open_session(
        self, to: str, payload: str, *, content_type: str = "text/plain", trace_id: str | None = None,
        message_id: str | None = None,
    ) -> Opened:
        """See AsyncAgent.open_session."""
        return self._call(self._agent.open_session(to, payload, content_type=content_type, trace_id=trace_id,
                                                   message_id=message_id))

    def send(self, session: str, payload: str, *, content_type: str = "text/plain") -> Sent:
        """See AsyncAgent.send."""
        return self._call(self._agent.send(session, payload, content_type=content_type))

    def resolve(self, session: str, payload: str = "", *, content_type: str = "text/plain") -> Resolved:
        """See AsyncAgent.resolve."""
        return self._call(self._agent.resolve(session, payload, content_type=content_type))

    def request(
        self,
        to: str,
        payload: str,
        *,
        content_type: str = "text/plain",
        trace_id: str | None = None,
        timeout: float = 30.0,
        message_id: str | None = None,
    ) -> Message:
        """See AsyncAgent.request."""
        return self._call(
            self._agent.request(to, payload, content_type=content_type, trace_id=trace_id, timeout=timeout,
                                message_id=message_id)
        )

    def introspect(self, handle: str) -> Introspected:
        """See AsyncAgent.introspect."""
        return self._call(self._agent.introspect(handle))

    def list_sessions(self) -> list[SessionInfo]:
        """See AsyncAgent.list_sessions."""
        return self._call(self._agent.list_sessions())

    def list_handles(self, *, tags: Iterable[str] | None = None, online_only: bool = True) -> list[HandleEntry]:
        """See AsyncAgent.list_handles."""
        return self._call(self._agent.list_handles(tags=tags, online_only=online_only))

    def find_handles(
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
        """See AsyncAgent.find_handles."""
        return self._call(
            self._agent.find_handles(capabilities=capabilities, domains=domains, tags=tags,
                                     command_name=command_name, version=version, limit=limit,
                                     online_only=online_only)
        )

    def create_room(self, title: str, members: Iterable[str] | None = None, *, trace_id: str | None = None,
                    max_events: int = DEFAULT_ROOM_MAX_EVENTS, max_bytes: int = DEFAULT_ROOM_MAX_BYTES) -> str:
        """See AsyncAgent.create_room."""
        return self._call(self._agent.create_room(title, members, trace_id=trace_id, max_events=max_events,
                                                  max_bytes=max_bytes))

    def join_room(self, room_id: str) -> bool:
        """See AsyncAgent.join_room."""
        return self._call(self._agent.join_room(room_id))

    def invite_to_room(self, room_id: str, handle: str) -> bool:
        """See AsyncAgent.invite_to_room."""
        return self._call(self._agent.invite_to_room(room_id, handle))

    def leave_room(self, room_id: str) -> bool:
        """See AsyncAgent.leave_room."""
        return self._call(self._agent.leave_room(room_id))

    def post_room_message(self, room_id: str, payload: str, *, content_type: str = "text/plain",
                          trace_id: str | None = None) -> RoomPosted:
        """See AsyncAgent.post_room_message."""
        return self._call(self._agent.post_room_message(room_id, payload, content_type=content_type,
                                                        trace_id=trace_id))

    def list_rooms(self) -> list[RoomInfo]:
        """See AsyncAgent.list_rooms."""
        return self._call(self._agent.list_rooms())

    def list_room_members(self, room_id: str) -> list[str]:
        """See AsyncAgent.list_room_members."""
        return self._call(self._agent.list_room_members(room_id))

    def replay_room(self, room_id: str, *, since_seq: int = 0) -> list[RoomEvent]:
        """See AsyncAgent.replay_room."""
        return self._call(self._agent.replay_room(room_id, since_seq=since_seq))

    def close_room(self, room_id: str) -> bool:
        """See AsyncAgent.close_room."""
        return self._call(self._agent.close_room(room_id))

    def on_message(self, fn: H) -> H:
        """Decorator: set the handler (plain functions run on worker threads)."""
        return self._agent.on_message(fn)

    def run_forever(self) -> None:
        """Block until ``close()`` is called from another thread, or Ctrl-C (which closes)."""
        try:
            self._call(self._agent.run_forever())
        except KeyboardInterrupt:
            self.close()
