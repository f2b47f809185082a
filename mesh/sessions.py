"""Session records: each participant keeps its own, in JetStream KV, and enforces the session's rules itself.

Record (msgpack map, bucket ``mesh_sessions``, key ``<owner>.<session>``; under the example permissions
only the owner may read or write its keys)::

    {"v": 2, "peer": str, "opener": bool, "trace_id": str, "open_id": str, "open_ref": int,
     "sent": int, "seen": int, "resolved": "" | "self" | "peer", "resolve_id": str, "resolve_seq": int,
     "resolve_ref": int, "resolve_for": str, "opened_at": float, "resolved_at": float | None}

* **Routing.** A participant sends only to the ``peer`` of its own record: the handle it opened the session
  to, or the sender named by the subject (``mesh.inbox.<to>.<from>``, which the server's permissions tie to
  the publisher) of the ``session_open`` it received. Nothing another agent can write decides where a
  reply goes.
* **Admission.** A received message is handed on only if its subject's sender is the record's peer;
  a ``session_open`` creates the receiver's record (the create is the check that no other agent already
  opened a session with that id). A copy of an open already received (same message id, another stored
  copy: a retry past JetStream's duplicate window) is dropped; so is a message sent after, or across, a
  resolve. ``open_ref``/``resolve_ref`` are the stream sequences of the copies received, which tell a
  redelivery (handled again) from a second copy (dropped).
* **Sequences** are Lamport clocks: a message numbers one past the last message its sender sent or saw in
  the session (``sent``, ``seen``), so sides taking turns count 1, 2, 3 ... as with one shared counter,
  the numbers increase along each sender's messages and along cause and effect, and two messages sent at
  the same moment by the two sides may share a number.
* **Resolve** is recorded (``resolved``, its message id, its sequence and the message being answered,
  ``resolve_for``) before it is published. A resolve of a session this participant resolved already
  re-publishes the recorded resolve (same message id and sequence) when the message it answered is being
  handled again (a redelivery after a crash between the record and the publish) or when its publish
  failed in this process; otherwise it raises SessionClosed.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import msgpack
import nats.js.errors
from nats.js.kv import KeyValue

from .envelope import Envelope
from .errors import MeshError, SessionClosed, SessionNotFound

__all__ = ["SessionBook", "SessionState", "SessionStore", "Verdict", "session_for"]

_MAX_CAS_ATTEMPTS = 50
_CACHE_SIZE = 4096
#: Sessions ``list_sessions()`` remembers per agent (the most recent ones).
_BOOK_SIZE = 1024
#: Sessions whose resolve was recorded but whose publish failed in this process (so resolving again re-publishes).
_UNSENT_SIZE = 1024
#: Namespace of the session ids derived from a caller's message id (uuid5).
_SESSION_NAMESPACE = uuid.UUID("5b0f3d0e-2f7c-4c43-9a66-3f1f6c1d7a21")

Resolver = Literal["", "self", "peer"]


def session_for(owner: str, message_id: str) -> str:
    """The session id an ``open_session`` by ``owner`` with this ``message_id`` gets: a uuid5 of both, so a
    retry with the same message id opens the same session (see docs/mesh.md, "Exactly once")."""
    return str(uuid.uuid5(_SESSION_NAMESPACE, f"{owner}\n{message_id}"))


class Verdict(enum.Enum):
    """What a receiver does with a message (see :meth:`SessionStore.admit`)."""

    DELIVER = "deliver"  #: hand it on (to the handler or a request() waiter)
    DUPLICATE = "duplicate"  #: a second stored copy of a message already received: acknowledge, drop (debug)
    LATE = "late"  #: sent after or across a resolve: acknowledge, drop (info)
    FOREIGN = "foreign"  #: not from the session's peer, or no such session here: terminate (warning)


@dataclass(frozen=True, slots=True)
class SessionState:
    """One participant's record of a session (see the module docstring); times are seconds since the epoch."""

    session: str
    owner: str
    peer: str
    opener: bool
    trace_id: str
    open_id: str
    open_ref: int = 0
    sent: int = 0
    seen: int = 0
    resolved: Resolver = ""
    resolve_id: str = ""
    resolve_seq: int = 0
    resolve_ref: int = 0
    resolve_for: str = ""
    opened_at: float = 0.0
    resolved_at: float | None = None

    @property
    def from_handle(self) -> str:
        """The handle that opened the session."""
        return self.owner if self.opener else self.peer

    @property
    def to_handle(self) -> str:
        """The handle the session was opened to."""
        return self.peer if self.opener else self.owner

    def next_sequence(self) -> int:
        """The sequence of this owner's next message: one past everything it sent or saw."""
        return max(self.sent, self.seen) + 1

    def encode(self) -> bytes:
        return cast(bytes, msgpack.packb({
            "v": 2, "peer": self.peer, "opener": self.opener, "trace_id": self.trace_id, "open_id": self.open_id,
            "open_ref": self.open_ref, "sent": self.sent, "seen": self.seen, "resolved": self.resolved,
            "resolve_id": self.resolve_id, "resolve_seq": self.resolve_seq, "resolve_ref": self.resolve_ref,
            "resolve_for": self.resolve_for, "opened_at": self.opened_at, "resolved_at": self.resolved_at,
        }, use_bin_type=True))

    @classmethod
    def decode(cls, session: str, owner: str, data: bytes) -> SessionState:
        """Raises MeshError on a malformed record."""
        try:
            obj: Any = msgpack.unpackb(data, raw=False)
            if obj["v"] != 2 or obj["resolved"] not in ("", "self", "peer"):
                raise ValueError(obj["v"])
            return cls(
                session=session, owner=owner, peer=str(obj["peer"]), opener=bool(obj["opener"]),
                trace_id=str(obj["trace_id"]), open_id=str(obj["open_id"]), open_ref=int(obj["open_ref"]),
                sent=int(obj["sent"]), seen=int(obj["seen"]), resolved=obj["resolved"],
                resolve_id=str(obj["resolve_id"]), resolve_seq=int(obj["resolve_seq"]),
                resolve_ref=int(obj["resolve_ref"]), resolve_for=str(obj["resolve_for"]),
                opened_at=float(obj["opened_at"]),
                resolved_at=None if obj.get("resolved_at") is None else float(obj["resolved_at"]),
            )
        except Exception as exc:
            raise MeshError(f"session {session!r} has a malformed record ({type(exc).__name__})") from None


class SessionStore:
    """The session records of one owner (``<owner>.<session>`` keys), with a revision cache."""

    def __init__(self, kv: KeyValue, owner: str) -> None:
        self._kv = kv
        self._owner = owner
        self._cache: OrderedDict[str, tuple[SessionState, int]] = OrderedDict()
        self._unsent: OrderedDict[str, None] = OrderedDict()

    def key(self, session: str) -> str:
        """The KV key of this owner's record of ``session``."""
        return f"{self._owner}.{session}"

    def _remember(self, state: SessionState, revision: int) -> None:
        old = self._cache.get(state.session)
        if old is not None:  # what this process saw since the record was written, and a resolve not written yet
            if old[0].seen > state.seen:
                state = replace(state, seen=old[0].seen)
            if old[0].resolved == "peer" and not state.resolved:
                state = replace(state, resolved="peer", resolve_id=old[0].resolve_id, resolve_seq=old[0].resolve_seq,
                                resolve_ref=old[0].resolve_ref, resolved_at=old[0].resolved_at)
        self._cache[state.session] = (state, revision)
        self._cache.move_to_end(state.session)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _read(self, session: str) -> tuple[SessionState, int] | None:
        try:
            entry = await self._kv.get(self.key(session))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        if entry.value is None:
            return None
        found = SessionState.decode(session, self._owner, entry.value), entry.revision or 0
        self._remember(*found)
        return self._cache[session]

    async def _state(self, session: str) -> tuple[SessionState, int] | None:
        return self._cache.get(session) or await self._read(session)

    async def current(self, session: str) -> SessionState | None:
        """The record as it is now (a resolved one from the cache, since it cannot change), or None."""
        cached = self._cache.get(session)
        if cached is not None and cached[0].resolved:
            return cached[0]
        self._cache.pop(session, None)
        found = await self._read(session)
        return found[0] if found is not None else None

    # ── the opener's side ───────────────────────────────────────────

    async def open(self, session: str, peer: str, trace_id: str, open_id: str) -> tuple[SessionState, bool]:
        """Create the opener's record (the open is sequence 1). Returns ``(state, retried)``: ``retried`` when
        the record exists already from an earlier attempt with the same peer and message id. Raises
        MeshError if the id is taken otherwise."""
        state = SessionState(session, self._owner, peer, opener=True, trace_id=trace_id, open_id=open_id, sent=1,
                             opened_at=time.time())
        try:
            revision = await self._kv.create(self.key(session), state.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            found = await self._read(session)
            if found is not None and found[0].opener and found[0].peer == peer and found[0].open_id == open_id:
                return found[0], True
            raise MeshError(f"session id {session!r} already exists") from None
        self._remember(state, revision)
        return state, False

    # ── sending ─────────────────────────────────────────────────────

    async def advance(self, session: str, *, resolve: bool, handling: Mapping[str, int]) -> tuple[SessionState, str, bool]:
        """Take the next sequence for a message from this owner (and resolve if asked); returns ``(state,
        message_id, republish)``: the record after the change and the new message's id, or, with
        ``republish``, the recorded resolve to publish again (see the module docstring).

        ``handling``: the messages of this session this agent's handlers are running now (message id ->
        sequence); the latest is the one a resolve answers. Raises SessionNotFound, SessionClosed.
        """
        found = self._cache.get(session)
        for _ in range(_MAX_CAS_ATTEMPTS):
            if found is None:
                found = await self._read(session)  # not the cache: it lost a race, or was never there
                if found is None:
                    raise SessionNotFound(session)
            state, revision = found
            found = None
            if state.resolved:
                if resolve and state.resolved == "self" and (
                        session in self._unsent or (state.resolve_for and state.resolve_for in handling)):
                    return state, state.resolve_id, True
                raise SessionClosed(session)
            seq = state.next_sequence()
            message_id = str(uuid.uuid4())
            if resolve:
                answering = max(handling, key=lambda m: handling[m]) if handling else ""
                new = replace(state, sent=seq, resolved="self", resolve_id=message_id, resolve_seq=seq,
                              resolve_for=answering, resolved_at=time.time())
            else:
                new = replace(state, sent=seq)
            try:
                new_revision = await self._kv.update(self.key(session), new.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self._remember(new, new_revision)
            if resolve:
                self._unsent[session] = None  # until published() says it went out
                while len(self._unsent) > _UNSENT_SIZE:
                    self._unsent.popitem(last=False)
            return new, message_id, False
        raise MeshError(f"session {session!r}: too much contention on the session record")

    def published(self, session: str) -> None:
        """The resolve of ``session`` was published: resolving again raises SessionClosed from now on."""
        self._unsent.pop(session, None)

    # ── receiving ───────────────────────────────────────────────────

    async def admit(self, env: Envelope, ref: int) -> tuple[Verdict, str]:
        """Decide what to do with ``env``, received from ``env.from_handle`` (already checked against the
        subject) as stream sequence ``ref``, and keep the record: a ``session_open`` creates it, a resolve
        marks it resolved. Returns the verdict and, unless DELIVER, why. Raises MeshError or nats errors
        when the record cannot be read or written (the caller retries later)."""
        session, sender = env.session_id, env.from_handle
        # An open of a session not in the cache: the create is the check (no read first).
        found = self._cache.get(session) if env.type == "session_open" else await self._state(session)
        if env.type == "session_open" and found is None:
            state = SessionState(session, self._owner, sender, opener=False, trace_id=env.trace_id,
                                 open_id=env.message_id, open_ref=ref, seen=env.sequence, opened_at=time.time())
            try:
                revision = await self._kv.create(self.key(session), state.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                found = await self._read(session)
                if found is None:
                    raise MeshError(f"session {session!r}: its record could not be created") from None
            else:
                self._remember(state, revision)
                return Verdict.DELIVER, ""
        if found is None:
            return Verdict.FOREIGN, f"this agent has no session {session}"
        state = found[0]
        if state.peer != sender or (env.type == "session_open" and state.opener):
            whose = "opened it itself" if state.opener and state.peer == sender else f"has it with {state.peer}"
            return Verdict.FOREIGN, f"it came from {sender}, but this agent {whose}"
        if env.type == "session_open":
            if state.open_id != env.message_id:
                return Verdict.FOREIGN, f"a second open of session {session} (message {state.open_id} opened it)"
            if state.open_ref != ref:
                return Verdict.DUPLICATE, f"another copy of the open {env.message_id}, received before"
        if state.resolved == "peer" and env.type == "session_resolve" and env.message_id == state.resolve_id:
            if state.resolve_ref == ref:
                return Verdict.DELIVER, ""
            return Verdict.DUPLICATE, f"another copy of the resolve {env.message_id}, received before"
        if state.resolved and env.sequence >= state.resolve_seq:
            by = "this agent" if state.resolved == "self" else sender
            return Verdict.LATE, f"sent after or across the resolve by {by} (sequence {env.sequence} >= " \
                                 f"{state.resolve_seq})"
        self.note_seen(session, env.sequence)
        if env.type == "session_resolve" and not state.resolved:
            await self.note_resolved(env, ref)
        return Verdict.DELIVER, ""

    def note_seen(self, session: str, sequence: int) -> None:
        """A message numbered ``sequence`` arrived in ``session`` (kept in memory; written with the next change)."""
        cached = self._cache.get(session)
        if cached is not None and cached[0].seen < sequence:
            self._cache[session] = (replace(cached[0], seen=sequence), cached[1])

    def resolve_seen(self, env: Envelope, ref: int) -> None:
        """The peer's resolve arrived: the cached record says so at once (no I/O); :meth:`note_resolved`
        writes it."""
        cached = self._cache.get(env.session_id)
        if cached is not None and not cached[0].resolved:
            self._cache[env.session_id] = (self._peer_resolved(cached[0], env, ref), cached[1])

    @staticmethod
    def _peer_resolved(state: SessionState, env: Envelope, ref: int) -> SessionState:
        return replace(state, seen=max(state.seen, env.sequence), resolved="peer", resolve_id=env.message_id,
                       resolve_seq=env.sequence, resolve_ref=ref, resolved_at=time.time())

    async def note_resolved(self, env: Envelope, ref: int) -> None:
        """Record the peer's resolve ``env`` (stream sequence ``ref``) under compare-and-set. Raises what KV
        raises; a record already resolved is left as it is."""
        session = env.session_id
        self.resolve_seen(env, ref)
        cached = self._cache.get(session)
        if cached is not None and cached[0].resolved == "peer" and cached[0].resolve_id == env.message_id:
            try:  # this owner is the only writer of its records: the cached revision is nearly always current
                revision = await self._kv.update(self.key(session), cached[0].encode(), last=cached[1])
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            else:
                self._remember(cached[0], revision)
                return
        for _ in range(_MAX_CAS_ATTEMPTS):
            found = await self._read_fresh(session)
            if found is None:
                return
            state, revision = found
            if state.resolved:
                return
            new = self._peer_resolved(state, env, ref)
            try:
                new_revision = await self._kv.update(self.key(session), new.encode(), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self._remember(new, new_revision)
            return

    async def _read_fresh(self, session: str) -> tuple[SessionState, int] | None:
        """The record as stored (the cache may hold a resolve not written yet)."""
        cached = self._cache.get(session)
        try:
            entry = await self._kv.get(self.key(session))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            return None
        if entry.value is None:
            return None
        state = SessionState.decode(session, self._owner, entry.value)
        if cached is not None:
            state = replace(state, seen=max(state.seen, cached[0].seen))
        return state, entry.revision or 0


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
