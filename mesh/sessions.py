"""Session state in JetStream KV: participants, trace_id, per-session sequence, resolved.

Record (msgpack map, key = session id, bucket ``mesh_sessions``)::

    {"v": 1, "from": str (opener), "to": str, "trace_id": str, "seq": int (last sequence used),
     "resolved": bool, "opened_at": float, "resolved_at": float | None}

Every send and resolve is a compare-and-set on the record's KV revision that bumps ``seq``; so
only the two participants can write, sequences are unique and increasing within a session, and a
message can never be accepted after the resolve (the resolve's CAS makes every later one fail).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, cast

import msgpack
import nats.js.errors
from nats.js.kv import KeyValue

from .errors import MeshError, NotParticipant, SessionClosed, SessionNotFound

__all__ = ["SessionBook", "SessionState", "SessionStore"]

_MAX_CAS_ATTEMPTS = 50
_CACHE_SIZE = 4096
#: Sessions ``list_sessions()`` remembers per agent (the most recent ones).
_BOOK_SIZE = 1024


@dataclass(frozen=True, slots=True)
class SessionState:
    """One session as stored: the opener, the peer, the trace id, the last sequence, resolved or not."""

    session: str
    from_handle: str
    to_handle: str
    trace_id: str
    seq: int
    resolved: bool
    opened_at: float
    resolved_at: float | None = None

    def peer_of(self, handle: str) -> str:
        """The other participant; raises NotParticipant if ``handle`` is neither."""
        if handle == self.from_handle:
            return self.to_handle
        if handle == self.to_handle:
            return self.from_handle
        raise NotParticipant(self.session, handle)

    def encode(self) -> bytes:
        return cast(
            bytes,
            msgpack.packb(
                {
                    "v": 1,
                    "from": self.from_handle,
                    "to": self.to_handle,
                    "trace_id": self.trace_id,
                    "seq": self.seq,
                    "resolved": self.resolved,
                    "opened_at": self.opened_at,
                    "resolved_at": self.resolved_at,
                },
                use_bin_type=True,
            ),
        )

    @classmethod
    def decode(cls, session: str, data: bytes) -> SessionState:
        """Raises MeshError on a malformed record."""
        try:
            obj: Any = msgpack.unpackb(data, raw=False)
            return cls(
                session=session,
                from_handle=str(obj["from"]),
                to_handle=str(obj["to"]),
                trace_id=str(obj["trace_id"]),
                seq=int(obj["seq"]),
                resolved=bool(obj["resolved"]),
                opened_at=float(obj["opened_at"]),
                resolved_at=None if obj.get("resolved_at") is None else float(obj["resolved_at"]),
            )
        except Exception as exc:
            raise MeshError(f"session {session!r} has a malformed record ({type(exc).__name__})") from None


class SessionStore:
    """Opens sessions and assigns sequences under compare-and-set, with a small revision cache."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._cache: OrderedDict[str, tuple[SessionState, int]] = OrderedDict()

    def _remember(self, state: SessionState, revision: int) -> None:
        self._cache[state.session] = (state, revision)
        self._cache.move_to_end(state.session)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def current(self, session: str) -> SessionState | None:
        """The session as it is now (a resolved one from the cache, since it cannot change), or None if
        it does not exist (any more)."""
        cached = self._cache.get(session)
        if cached is not None and cached[0].resolved:
            return cached[0]
        try:
            state, revision = await self.get(session)
        except SessionNotFound:
            self._cache.pop(session, None)
            return None
        self._remember(state, revision)
        return state

    def forget(self, session: str) -> None:
        """Drop a session from the local cache (e.g. after it resolved)."""
        self._cache.pop(session, None)

    async def get(self, session: str) -> tuple[SessionState, int]:
        """(state, revision) read from KV; raises SessionNotFound."""
        try:
            entry = await self._kv.get(session)
        except nats.js.errors.KeyNotFoundError:
            raise SessionNotFound(session) from None
        except nats.js.errors.InvalidKeyError:
            raise SessionNotFound(session) from None
        if entry.value is None:
            raise SessionNotFound(session)
        return SessionState.decode(session, entry.value), entry.revision or 0

    async def open(self, session: str, from_handle: str, to_handle: str, trace_id: str) -> SessionState:
        """Create the record with ``seq=1`` (the open message); raises MeshError if the id exists."""
        state = SessionState(session, from_handle, to_handle, trace_id, seq=1, resolved=False,
                             opened_at=time.time())
        try:
            revision = await self._kv.create(session, state.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            raise MeshError(f"session id {session!r} already exists") from None
        self._remember(state, revision)
        return state

    async def advance(self, session: str, handle: str, *, resolve: bool) -> SessionState:
        """Take the next sequence for a message from ``handle`` (and resolve if asked).

        Returns the new state (``seq`` is the message's sequence); raises SessionNotFound,
        NotParticipant, SessionClosed.
        """
        cached = self._cache.get(session)
        for _ in range(_MAX_CAS_ATTEMPTS):
            state, revision = cached if cached is not None else await self.get(session)
            cached = None
            state.peer_of(handle)
            if state.resolved:
                self._remember(state, revision)
                raise SessionClosed(session)
            new = replace(state, seq=state.seq + 1, resolved=resolve,
                          resolved_at=time.time() if resolve else None)
            try:
                new_revision = await self._kv.update(session, new.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self._remember(new, new_revision)  # a resolved state is terminal: later writes fail locally
            return new
        raise MeshError(f"session {session!r}: too much contention on the session record")


class SessionBook:
    """The ids of the sessions one agent took part in since it started (opened, sent, received), the
    ``_BOOK_SIZE`` most recent ones, oldest first: what ``list_sessions()`` reports on."""

    def __init__(self, limit: int = _BOOK_SIZE) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def note(self, session: str) -> None:
        self._ids[session] = None
        self._ids.move_to_end(session)
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def ids(self) -> list[str]:
        return list(self._ids)
