"""The room methods of AsyncAgent (tailbus's names and signatures), and attaching an agent to rooms.

A mixin, so that agent.py stays about the agent's lifecycle and sessions; the work is done by
:class:`mesh.rooms.Rooms`. See docs/mesh.md, "Rooms".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import nats.errors
from nats.js import JetStreamContext

from .connection import Denials
from .constants import DEFAULT_ROOM_MAX_BYTES, DEFAULT_ROOM_MAX_EVENTS, ROOMS_BUCKET, ROOMS_STREAM
from .dispatch import Dispatcher
from .errors import MeshError, PermissionDenied
from .foundations import Foundations
from .handles import room_filter, rooms_durable_name
from .jetstream import ConsumerSpec, ensure_bucket, ensure_rooms_stream
from .operation import operation, patient
from .quotas import Quotas
from .rooms import RoomFeed, Rooms, RoomStore
from .sender import Sender
from .types import RoomEvent, RoomInfo, RoomPosted

__all__ = ["RoomMethods"]

log = logging.getLogger("mesh.agent")


class RoomMethods:
    """create_room, join_room, invite_to_room, leave_room, post_room_message, list_rooms,
    list_room_members, replay_room, close_room."""

    _handle: str
    _js: JetStreamContext | None
    _outbox: Sender | None
    _denials: Denials
    _dispatch: Dispatcher
    _max_in_flight: int
    _max_deliver: int
    _ack_wait: float
    _rooms: Rooms | None
    _rooms_problem: str
    _foundations: Foundations | None
    _quotas: Quotas
    _replicas: int

    def _sender(self) -> Sender:
        raise NotImplementedError  # AsyncAgent's

    async def create_room(self, title: str, members: Iterable[str] | None = None, *, trace_id: str | None = None,
                          max_events: int = DEFAULT_ROOM_MAX_EVENTS, max_bytes: int = DEFAULT_ROOM_MAX_BYTES) -> str:
        """Create an open room with this agent and ``members`` (registered handles) in it; returns its id.

        ``trace_id``: carried by the room's events that have none of their own (default: the room id).
        ``max_events`` / ``max_bytes``: the room's limits (events; payload bytes posted); posting past
        them raises RoomFull. Members learn of the room from its first event. Raises InvalidHandle,
        HandleNotFound, RoomFull (more than 256 members), NotRegistered, ValueError.
        """
        with operation("create_room", "create_room"):
            return await self._room_ops().create(title, members or (), trace_id=trace_id, max_events=max_events,
                                                 max_bytes=max_bytes)

    async def join_room(self, room_id: str) -> bool:
        """Join an open room (anyone may, as in tailbus; the members get ``member_joined``). True, also
        when already a member. Raises RoomNotFound, RoomClosed, RoomFull, NotRegistered."""
        with operation("join_room", f"join room {room_id!r}"):
            return await self._room_ops().join(room_id)

    async def invite_to_room(self, room_id: str, handle: str) -> bool:
        """Add ``handle`` (registered) to a room this agent is a member of; the members, ``handle``
        included, get ``member_joined`` with it as ``subject_handle``. True, also when already a member.
        (Not in tailbus.) Raises RoomNotFound, NotRoomMember, RoomClosed, RoomFull, HandleNotFound."""
        with operation("invite_room", f"invite {handle!r} to room {room_id!r}"):
            return await self._room_ops().invite(room_id, handle)

    async def leave_room(self, room_id: str) -> bool:
        """Leave a room (also a closed one); the other members get ``member_left``. Raises RoomNotFound,
        NotRoomMember, NotRegistered."""
        with operation("leave_room", f"leave room {room_id!r}"):
            return await self._room_ops().leave(room_id)

    async def post_room_message(self, room_id: str, payload: str, *, content_type: str = "text/plain",
                                trace_id: str | None = None) -> RoomPosted:
        """Post to a room this agent is a member of; every other member gets a ``message_posted`` event.

        ``trace_id``: the message's, else the room's. Raises RoomNotFound, RoomClosed, NotRoomMember,
        RoomFull, PayloadTooLarge, NotRegistered, MeshTimeout.
        """
        with operation("post_room", f"post in room {room_id!r}"):
            return await self._room_ops().post(room_id, payload, content_type=content_type, trace_id=trace_id)

    async def list_rooms(self) -> list[RoomInfo]:
        """The rooms this agent is a member of (open and closed), most recently changed first."""
        with operation("list_rooms", "list_rooms"):
            return await self._room_ops().member_of()

    async def list_room_members(self, room_id: str) -> list[str]:
        """The members of a room this agent is a member of. Raises RoomNotFound, NotRoomMember."""
        with operation("room_members", f"list members of room {room_id!r}"):
            return await self._room_ops().members(room_id)

    async def replay_room(self, room_id: str, *, since_seq: int = 0) -> list[RoomEvent]:
        """The room's events with ``room_seq > since_seq`` in ``room_seq`` order: every event since this
        agent became a member, its own included. Raises RoomNotFound, NotRoomMember, NotRegistered."""
        with operation("replay_room", f"replay room {room_id!r}"):
            return await self._room_ops().replay(room_id, since_seq)

    async def close_room(self, room_id: str) -> bool:
        """Close a room to posts and joins (any member may; the others get ``room_closed``). True, also
        when closed already. Raises RoomNotFound, NotRoomMember, NotRegistered."""
        with operation("close_room", f"close room {room_id!r}"):
            return await self._room_ops().close(room_id)

    # ── internals ───────────────────────────────────────────────────

    def _room_ops(self) -> Rooms:
        self._sender()
        if self._rooms is None:
            raise MeshError(f"rooms are not available to {self._handle!r}: {self._rooms_problem} (see "
                            "examples/nats-server.conf for the permissions rooms need)")
        return self._rooms

    async def _attach_rooms(self, deliver: str) -> None:
        """Make sure the rooms stream, bucket and this handle's room consumer (delivering to ``deliver``)
        exist; on a server that does not allow them (permissions written before rooms existed), log why and
        go on without rooms."""
        js, outbox, handle, foundations = self._js, self._outbox, self._handle, self._foundations
        assert js is not None and outbox is not None and foundations is not None
        quotas, replicas, denials = self._quotas, self._replicas, self._denials
        spec = ConsumerSpec(ROOMS_STREAM, rooms_durable_name(handle), room_filter(handle), deliver, handle,
                            f"mesh room events of {handle}", resumable=True)

        async def shared() -> RoomStore:
            await ensure_rooms_stream(js, quotas, replicas=replicas, denials=denials)
            return RoomStore(js, await ensure_bucket(js, ROOMS_BUCKET, quotas, replicas=replicas, denials=denials))

        async def setup() -> Rooms:
            store = await shared()
            await foundations.consumer(spec)
            return Rooms(handle, store=store, feed=RoomFeed(handle, js=js, denials=denials), outbox=outbox,
                         denials=denials)

        async def restore() -> None:
            await shared()

        stream, bucket = f"$JS.API.STREAM.%s.{ROOMS_STREAM}", f"$JS.API.STREAM.%s.KV_{ROOMS_BUCKET}"
        api = f"$JS.API.CONSUMER.%s.{ROOMS_STREAM}.{spec.name}"
        subjects = [stream % "INFO", stream % "CREATE", bucket % "INFO", bucket % "CREATE",
                    f"{api % 'CREATE'}.{spec.filter_subject}", api % "INFO", api % "DELETE"]
        try:
            self._rooms = await denials.guard(patient(setup, handle, "rooms"), "publish", subjects)
        except (PermissionDenied, nats.errors.Error) as exc:
            self._rooms_problem = str(exc) if isinstance(exc, PermissionDenied) else f"{type(exc).__name__}: {exc}"
            log.warning("mesh agent %s: rooms are unavailable (%s); sessions work as usual", handle,
                        self._rooms_problem)
            return
        foundations.extra = restore
        self._dispatch.check_room = self._rooms.verify
