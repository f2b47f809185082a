"""Rooms as one agent uses them: the operations behind ``create_room`` ... ``close_room``, and the check
a member's agent makes before it hands a room event to ``on_message``.

Every change (join, invite, leave, post, close) is one compare-and-set on the room record (which
assigns its ``room_seq`` and enforces the rules, see :mod:`mesh.rooms.record`), then one copy of the
event per recipient: the members after the change, and the sender itself (its own copy is what its
replays read; its agent does not hand it to its own ``on_message``, as in tailbus).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from ..connection import Denials
from ..constants import MAX_ROOM_MEMBERS, MAX_ROOM_TITLE, ROOMS_BUCKET
from ..errors import RoomNotFound
from ..handles import validate_handle, validate_room_id
from ..lanes import Lanes
from ..sender import Sender
from ..types import RoomEvent, RoomInfo, RoomPosted
from .feed import RoomFeed
from .record import Change, RoomRecord
from .store import RoomStore, Rule

__all__ = ["Rooms"]

log = logging.getLogger("mesh.rooms")

#: Upper bound of a room event's bytes besides payload and content type: title, members, ids, keys.
_ROOM_EVENT_OVERHEAD = MAX_ROOM_TITLE + 66 * MAX_ROOM_MEMBERS + 512
_MAX_TRACE_ID = 128


class Rooms:
    """The room operations of the agent ``handle`` (see AsyncAgent's room methods for the contract)."""

    def __init__(self, handle: str, *, store: RoomStore, feed: RoomFeed, outbox: Sender, denials: Denials) -> None:
        self._handle = handle
        self._store = store
        self._feed = feed
        self._outbox = outbox
        self._denials = denials
        self._turns = Lanes()  # this agent's changes to one room take turns: its events keep their order

    async def create(self, title: str, members: Iterable[str], *, trace_id: str | None, max_events: int,
                     max_bytes: int) -> str:
        if not isinstance(title, str):
            raise TypeError(f"title must be str, got {type(title).__name__}")
        if len(title.encode("utf-8")) > MAX_ROOM_TITLE:
            raise ValueError(f"a room title is at most {MAX_ROOM_TITLE} UTF-8 bytes")
        if isinstance(members, str):
            raise TypeError("members must be a list of handles, not one string")
        if max_events < 1 or max_bytes < 0:
            raise ValueError("max_events must be >= 1 and max_bytes >= 0")
        wanted = tuple(dict.fromkeys(validate_handle(h) for h in members))
        for handle in wanted:
            if handle != self._handle:
                await self._outbox.require_handle(handle)
        room_id = str(uuid.uuid4())
        record = RoomRecord.new(room_id, title, self._handle, wanted, trace_id=_trace(trace_id) or room_id,
                                max_events=max_events, max_bytes=max_bytes, now=time.time())
        await self._denials.guard(self._store.create(record), "publish", [f"$KV.{ROOMS_BUCKET}.{room_id}"])
        return room_id

    async def join(self, room_id: str) -> bool:
        await self._apply(room_id, lambda r: r.add(self._handle, self._handle, time.time()))
        return True

    async def invite(self, room_id: str, handle: str) -> bool:
        validate_handle(handle)
        validate_room_id(room_id)
        await self._outbox.require_handle(handle)
        await self._apply(room_id, lambda r: r.add(self._handle, handle, time.time()))
        return True

    async def leave(self, room_id: str) -> bool:
        await self._apply(room_id, lambda r: r.remove(self._handle, time.time()))
        return True

    async def close(self, room_id: str) -> bool:
        await self._apply(room_id, lambda r: r.close(self._handle, time.time()))
        return True

    async def post(self, room_id: str, payload: str, *, content_type: str, trace_id: str | None) -> RoomPosted:
        validate_room_id(room_id)
        size = self._outbox.check_payload(payload, content_type, overhead=_ROOM_EVENT_OVERHEAD)
        trace = _trace(trace_id)
        event = await self._apply(room_id, lambda r: r.post(self._handle, size, time.time()),
                                  payload=payload, content_type=content_type, trace_id=trace)
        assert event is not None
        return RoomPosted(event_id=event.event_id, room_seq=event.room_seq)

    async def members(self, room_id: str) -> list[str]:
        record = await self._store.get(validate_room_id(room_id))
        record.require_member(self._handle)
        return list(record.members)

    async def member_of(self) -> list[RoomInfo]:
        records = [r for r in await self._store.all() if r.is_member(self._handle)]
        records.sort(key=lambda r: (-r.updated_at, r.room_id))
        return [r.info() for r in records]

    async def replay(self, room_id: str, since_seq: int) -> list[RoomEvent]:
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0:
            raise ValueError("since_seq must be an integer >= 0")
        record = await self._store.get(validate_room_id(room_id))
        record.require_member(self._handle)
        copies = await self._feed.replay(room_id)
        record = await self._store.get(room_id)  # as fresh as the copies, for the check below
        seen: set[str] = set()
        events = []
        for event in sorted(copies, key=lambda e: e.room_seq):
            if event.room_seq <= since_seq or event.event_id in seen:
                continue
            reason = _implausible(event, record)
            if reason is not None:
                log.warning("mesh agent %s: replay of room %s skipped event %s: %s", self._handle, room_id,
                            event.event_id, reason)
                continue
            seen.add(event.event_id)
            events.append(event)
        return events

    async def verify(self, event: RoomEvent) -> str | None:
        """Why ``event`` cannot be genuine, or None if it can: its ``room_seq`` was assigned and its sender
        was a member of its room at that seq (checked on the record this agent saw last, then on a fresh one).
        Raises MeshError (or a nats error) when the record cannot be read."""
        try:
            reason = _implausible(event, await self._store.cached(event.room_id))
            if reason is not None:
                reason = _implausible(event, await self._store.get(event.room_id))
        except RoomNotFound:
            return f"room {event.room_id} does not exist"
        return reason

    async def _apply(self, room_id: str, rule: Rule, *, payload: str = "", content_type: str = "text/plain",
                     trace_id: str = "") -> RoomEvent | None:
        """Apply ``rule`` to the room and send the event it makes; None if nothing changed.

        One change per room at a time from this agent, publish included, so that the copies of its
        events reach every member in ``room_seq`` order, and its own changes never race each other.
        """
        validate_room_id(room_id)
        turn = self._turns.enter(room_id)
        try:
            await turn
            change = await self._denials.guard(self._store.change(room_id, rule), "publish",
                                               [f"$KV.{ROOMS_BUCKET}.{room_id}"])
            if change is None:
                return None
            event = _event(change, self._handle, payload=payload, content_type=content_type, trace_id=trace_id)
            await self._feed.publish(event, (*change.record.members, self._handle))
            return event
        finally:
            self._turns.leave(room_id, turn)


def _implausible(event: RoomEvent, record: RoomRecord) -> str | None:
    if event.room_seq > record.seq:
        return f"room {event.room_id} never assigned seq {event.room_seq}"
    if not record.was_member(event.sender_handle, event.room_seq):
        return f"{event.sender_handle} is not a member of room {event.room_id} (at seq {event.room_seq})"
    return None


def _trace(trace_id: str | None) -> str:
    if trace_id is None or trace_id == "":
        return ""
    if not isinstance(trace_id, str) or len(trace_id) > _MAX_TRACE_ID:
        raise ValueError(f"trace_id must be a string of at most {_MAX_TRACE_ID} characters")
    return trace_id


def _event(change: Change, sender: str, *, payload: str, content_type: str, trace_id: str) -> RoomEvent:
    record = change.record
    return RoomEvent(room_id=record.room_id, room_seq=record.seq, sender_handle=sender,
                     subject_handle=change.subject, payload=payload, content_type=content_type,
                     event_type=change.event_type, trace_id=trace_id or record.trace_id,
                     event_id=str(uuid.uuid4()), sent_at=time.time(), members=record.members, title=record.title)
