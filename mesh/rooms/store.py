"""Room records in JetStream KV (bucket ``mesh_rooms``): create, change under compare-and-set, list.

Every change reads the record (from a small cache when it can), applies one rule of
:class:`~mesh.rooms.record.RoomRecord` and writes it back with the read revision; a lost race is
retried with the fresh record, after a short randomised back-off (up to 50 attempts). A rule that refuses on a cached record is asked again on a fresh one
before its error is raised, since someone else may have changed the room meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ..constants import ROOMS_BUCKET
from ..errors import MeshError, RoomNotFound
from ..jetstream import latest_entries
from .record import Change, RoomRecord

__all__ = ["RoomStore"]

log = logging.getLogger("mesh.rooms")

_MAX_CAS_ATTEMPTS = 50
_CACHE_SIZE = 1024

Rule = Callable[[RoomRecord], Change | None]


class RoomStore:
    """Room records of one agent's connection, with a revision cache of the last 1,024 rooms used."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv
        self._cache: OrderedDict[str, tuple[RoomRecord, int]] = OrderedDict()

    def _remember(self, record: RoomRecord, revision: int) -> None:
        self._cache[record.room_id] = (record, revision)
        self._cache.move_to_end(record.room_id)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def get(self, room_id: str) -> RoomRecord:
        """The current record, read from KV; raises RoomNotFound."""
        return (await self._read(room_id))[0]

    async def cached(self, room_id: str) -> RoomRecord:
        """The record as last seen by this agent, read from KV if it has not seen it; raises RoomNotFound."""
        hit = self._cache.get(room_id)
        return hit[0] if hit is not None else await self.get(room_id)

    async def _read(self, room_id: str) -> tuple[RoomRecord, int]:
        try:
            entry = await self._kv.get(room_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            self._cache.pop(room_id, None)
            raise RoomNotFound(room_id) from None
        if entry.value is None:
            raise RoomNotFound(room_id)
        record = RoomRecord.decode(room_id, entry.value)
        self._remember(record, entry.revision or 0)
        return record, entry.revision or 0

    async def create(self, record: RoomRecord) -> None:
        """Store a new room; raises MeshError if the id exists."""
        try:
            revision = await self._kv.create(record.room_id, record.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            raise MeshError(f"room id {record.room_id!r} already exists") from None
        self._remember(record, revision)

    async def change(self, room_id: str, rule: Rule) -> Change | None:
        """Apply ``rule`` under compare-and-set; returns its Change (None: nothing to change).

        Raises RoomNotFound, and whatever ``rule`` raises on the current record (RoomClosed,
        NotRoomMember, RoomFull).
        """
        current = self._cache.get(room_id)
        fresh = current is None
        for attempt in range(_MAX_CAS_ATTEMPTS):
            record, revision = current if current is not None else await self._read(room_id)
            current = None
            try:
                change = rule(record)
            except MeshError:
                if fresh:
                    raise
                fresh = True  # refused on what this agent saw last: ask again on the room as it is now
                continue
            fresh = True
            if change is None:
                return None
            try:
                new_revision = await self._kv.update(room_id, change.record.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                # another agent changed the room first: back off a little (randomised, growing), re-read
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
                continue
            self._remember(change.record, new_revision)
            return change
        raise MeshError(f"room {room_id!r}: too much contention on the room record")

    async def all(self) -> list[RoomRecord]:
        """Every room's record (see ``mesh.jetstream.latest_entries``: a KV watch can miss rooms while
        others change)."""
        records: list[RoomRecord] = []
        for entry in await latest_entries(self._js, ROOMS_BUCKET):
            try:
                records.append(RoomRecord.decode(entry.key, entry.value or b""))
            except MeshError:
                log.warning("mesh rooms: undecodable record for room %s", entry.key[:140])
        return records
