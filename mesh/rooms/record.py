"""A room's record and its rules, pure (no I/O): who may join, post, leave and close, and the limits.

Record (msgpack map, key = room id, bucket ``mesh_rooms``)::

    {"v": 1, "title": str, "created_by": str, "members": [str], "spans": [[str, int, int | None]],
     "status": "open"|"closed", "seq": int (last room_seq used), "events": int, "bytes": int,
     "max_events": int, "max_bytes": int, "trace_id": str, "created_at": float, "updated_at": float}

``spans`` records when each handle was a member: ``[handle, first_seq, last_seq]``, ``last_seq`` None
while it still is (initial members start at 0; a join at seq s starts at s, a leave at seq s ends
there). An event is plausible only if its sender was a member at its ``room_seq``, so a copy that a
non-member slipped into a member's feed is refused even after that handle joins.
Every change is one transition below, applied under the record's compare-and-set (see
:mod:`mesh.rooms.store`), so ``room_seq`` is unique and increasing per room and no event is accepted
after ``room_closed``. The rules follow tailbus's room manager: anyone may join an open room, only
members post, replay, list members and close, and a closed room refuses posts and joins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

import msgpack

from ..constants import MAX_ROOM_MEMBERS
from ..errors import MeshError, NotRoomMember, RoomClosed, RoomFull
from ..types import RoomEventType, RoomInfo, RoomStatus

__all__ = ["Change", "RoomRecord", "Span"]

#: (handle, first room_seq as a member, last room_seq as a member or None while it still is one)
Span = tuple[str, int, int | None]


@dataclass(frozen=True, slots=True)
class Change:
    """One accepted transition: the record after it, and the event it makes (``room_seq`` =
    ``record.seq``; ``subject`` is the member who joined or left, else ``""``)."""

    record: RoomRecord
    event_type: RoomEventType
    subject: str = ""


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A room as stored; ``created_at``/``updated_at`` are seconds since the epoch (the writer's clock)."""

    room_id: str
    title: str
    created_by: str
    members: tuple[str, ...]
    status: RoomStatus
    seq: int
    events: int
    payload_bytes: int
    max_events: int
    max_bytes: int
    trace_id: str
    created_at: float
    updated_at: float
    spans: tuple[Span, ...] = ()

    @classmethod
    def new(cls, room_id: str, title: str, creator: str, members: tuple[str, ...], *, trace_id: str,
            max_events: int, max_bytes: int, now: float) -> RoomRecord:
        """The record of a new open room: the creator first, then ``members`` without duplicates.

        Raises RoomFull (``max_members``) for more than ``MAX_ROOM_MEMBERS`` members.
        """
        unique = tuple(dict.fromkeys((creator, *members)))
        if len(unique) > MAX_ROOM_MEMBERS:
            raise RoomFull(room_id, "max_members", MAX_ROOM_MEMBERS)
        return cls(room_id=room_id, title=title, created_by=creator, members=unique, status="open", seq=0,
                   events=0, payload_bytes=0, max_events=max_events, max_bytes=max_bytes, trace_id=trace_id,
                   created_at=now, updated_at=now, spans=tuple((h, 0, None) for h in unique))

    # ── rules ───────────────────────────────────────────────────────

    def is_member(self, handle: str) -> bool:
        return handle in self.members

    def was_member(self, handle: str, seq: int) -> bool:
        """True if ``handle`` was a member when event ``seq`` was made (so an event it sent can be genuine)."""
        return any(h == handle and first <= seq and (last is None or seq <= last) for h, first, last in self.spans)

    def require_member(self, handle: str) -> None:
        """Raises NotRoomMember unless ``handle`` is a member."""
        if handle not in self.members:
            raise NotRoomMember(self.room_id, handle)

    def add(self, actor: str, handle: str, now: float) -> Change | None:
        """``handle`` joins (``actor == handle``) or is invited by the member ``actor``.

        None if ``handle`` already is a member. Raises RoomClosed, NotRoomMember (an inviter that is
        not a member), RoomFull (``max_members`` or ``max_events``).
        """
        if self.status != "open":
            raise RoomClosed(self.room_id)
        if handle in self.members:
            return None
        if actor != handle:
            self.require_member(actor)
        if len(self.members) >= MAX_ROOM_MEMBERS:
            raise RoomFull(self.room_id, "max_members", MAX_ROOM_MEMBERS)
        self._require_room(0)
        record = self._next(now, members=(*self.members, handle), spans=(*self.spans, (handle, self.seq + 1, None)))
        return Change(record, "member_joined", handle)

    def remove(self, handle: str, now: float) -> Change:
        """``handle`` leaves; allowed in a closed or full room. Raises NotRoomMember."""
        self.require_member(handle)
        spans = tuple((h, first, self.seq + 1) if h == handle and last is None else (h, first, last)
                      for h, first, last in self.spans)
        record = self._next(now, members=tuple(h for h in self.members if h != handle), spans=spans)
        return Change(record, "member_left", handle)

    def post(self, actor: str, size: int, now: float) -> Change:
        """A message of ``size`` payload bytes from ``actor``. Raises RoomClosed, NotRoomMember, RoomFull."""
        if self.status != "open":
            raise RoomClosed(self.room_id)
        self.require_member(actor)
        self._require_room(size)
        return Change(self._next(now, payload_bytes=self.payload_bytes + size), "message_posted")

    def close(self, actor: str, now: float) -> Change | None:
        """The member ``actor`` closes the room; None if it is closed already. Raises NotRoomMember."""
        self.require_member(actor)
        if self.status == "closed":
            return None
        return Change(self._next(now, status="closed"), "room_closed")

    def _require_room(self, size: int) -> None:
        if self.events + 1 > self.max_events:
            raise RoomFull(self.room_id, "max_events", self.max_events)
        if self.payload_bytes + size > self.max_bytes:
            raise RoomFull(self.room_id, "max_bytes", self.max_bytes)

    def _next(self, now: float, **changes: Any) -> RoomRecord:
        return replace(self, seq=self.seq + 1, events=self.events + 1, updated_at=max(now, self.updated_at),
                       **changes)

    # ── views and wire form ─────────────────────────────────────────

    def info(self) -> RoomInfo:
        return RoomInfo(room_id=self.room_id, title=self.title, created_by=self.created_by, home_node_id="",
                        members=self.members, status=self.status, next_seq=self.seq + 1,
                        created_at=self.created_at, updated_at=self.updated_at, trace_id=self.trace_id,
                        max_events=self.max_events, max_bytes=self.max_bytes)

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb({
            "v": 1, "title": self.title, "created_by": self.created_by, "members": list(self.members),
            "spans": [list(span) for span in self.spans], "status": self.status, "seq": self.seq, "events": self.events,
            "bytes": self.payload_bytes, "max_events": self.max_events, "max_bytes": self.max_bytes,
            "trace_id": self.trace_id, "created_at": self.created_at, "updated_at": self.updated_at,
        }, use_bin_type=True))

    @classmethod
    def decode(cls, room_id: str, data: bytes) -> RoomRecord:
        """Raises MeshError on a malformed record."""
        try:
            obj: Any = msgpack.unpackb(data, raw=False)
            status = obj["status"]
            if status not in ("open", "closed"):
                raise ValueError(status)
            return cls(room_id=room_id, title=str(obj["title"]), created_by=str(obj["created_by"]),
                       members=tuple(str(h) for h in obj["members"]),
                       spans=tuple((str(h), int(first), None if last is None else int(last))
                                   for h, first, last in obj["spans"]),
                       status=status, seq=int(obj["seq"]), events=int(obj["events"]), payload_bytes=int(obj["bytes"]),
                       max_events=int(obj["max_events"]), max_bytes=int(obj["max_bytes"]),
                       trace_id=str(obj["trace_id"]), created_at=float(obj["created_at"]),
                       updated_at=float(obj["updated_at"]))
        except Exception as exc:
            raise MeshError(f"room {room_id!r} has a malformed record ({type(exc).__name__})") from None
