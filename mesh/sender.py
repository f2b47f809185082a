"""The sending side of an agent: open sessions, send and resolve in them, publish envelopes.

One Sender per connected agent. Session rules are enforced here, on this agent's own session record
(see :mod:`mesh.sessions`): a message goes only to the peer that record names. Each message is published
on ``mesh.inbox.<to>.<from>`` (or, for what the recipient's manifest declares priority, on
``mesh.prio.<to>.<from>``, see :mod:`mesh.priority`) with ``Nats-Msg-Id = <from>.<message_id>`` (see
:func:`dedup_id`), retried with the same id (stored once) on timeouts; a recipient's full inbox is waited on (back-pressure) until it takes
messages again, and InboxFull raised when it took none for ``Quotas.full_wait`` seconds; a publish the server's permissions deny raises PermissionDenied
at once (see :mod:`mesh.connection`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .connection import Denials
from .constants import SESSIONS_BUCKET
from .envelope import Envelope, encode_envelope
from .errors import HandleNotFound, InboxFull, MeshError, MeshTimeout, PayloadTooLarge
from .handles import inbox_subject, priority_subject, validate_handle
from .priority import Lane
from .quotas import Quotas
from .registry import Registry
from .sessions import SessionState, SessionStore
from .types import Manifest, MessageType, Opened

__all__ = ["Sender", "StreamFull", "publish"]

log = logging.getLogger("mesh.agent")

#: Upper bound of the envelope's bytes besides payload and content_type (ids, handles, keys).
_ENVELOPE_OVERHEAD = 512
#: Seconds a positive "this handle is registered" lookup (and its manifest) is trusted.
_KNOWN_HANDLE_TTL = 5.0
_PUBLISH_ATTEMPTS = 3
#: Seconds one publish waits for the stream's acknowledgement.
_PUBLISH_TIMEOUT = 5.0
#: Back-off between attempts on a full inbox: starts here, doubles, at most _FULL_BACKOFF_MAX.
_FULL_BACKOFF = 0.05
_FULL_BACKOFF_MAX = 1.0

#: "May this agent still act as its handle?" -- raises ClaimLost when not (see Presence.confirm).
ClaimGuard = Callable[[], Awaitable[None]]


class Sender:
    """Sends as ``handle`` over ``nc``/``js``; ``max_payload`` is the limit on a payload, UTF-8 bytes.

    ``handling(session)`` gives the messages of ``session`` this agent's handlers are running now (see
    SessionStore.advance); ``claim_guard()`` raises ClaimLost once this agent lost its handle.
    """

    def __init__(self, handle: str, *, nc: NATS, js: JetStreamContext, registry: Registry, sessions: SessionStore,
                 denials: Denials, max_payload: int, quotas: Quotas,
                 handling: Callable[[str], Mapping[str, int]] | None = None,
                 claim_guard: ClaimGuard | None = None) -> None:
        self._handle = handle
        self._nc = nc
        self._js = js
        self._registry = registry
        self._sessions = sessions
        self._denials = denials
        self._max_payload = max_payload
        self._quotas = quotas
        self._handling = handling or (lambda session: {})
        self._claim_guard = claim_guard
        self._known: dict[str, tuple[float, Manifest | None]] = {}
        self._rooms: OrderedDict[str, _Room] = OrderedDict()

    @property
    def sessions(self) -> SessionStore:
        return self._sessions

    async def open(self, session: str, to: str, payload: str, *, content_type: str, trace_id: str | None,
                   message_id: str) -> tuple[Opened, SessionState, bool]:
        """Create the session record and publish its first message; returns ``(opened, record, retried)``.
        ``retried``: the record existed from an earlier attempt with this message id (the open is published
        again, stored once). Raises InvalidHandle, HandleNotFound, PayloadTooLarge, PermissionDenied,
        MeshTimeout, InboxFull, ClaimLost."""
        validate_handle(to)
        self.check_payload(payload, content_type)
        manifest = await self.require_handle(to)
        await self._check_claim()
        trace = trace_id or str(uuid.uuid4())
        state, retried = await self._denials.guard(self._sessions.open(session, to, trace, message_id), "publish",
                                                   [f"$KV.{SESSIONS_BUCKET}.{self._sessions.key(session)}"])
        if retried:
            log.info("mesh agent %s: open_session %s to %r again (message %s): the session exists%s", self._handle,
                     session, to, message_id, ", answered already" if state.resolved else "; publishing again")
        if not (retried and state.resolved):
            env = Envelope(message_id=message_id, session_id=session, from_handle=self._handle, to_handle=to,
                           payload=payload, content_type=content_type, sent_at=time.time(), type="session_open",
                           trace_id=state.trace_id, sequence=1)
            await self._publish(env, manifest)
        return Opened(session=session, message_id=message_id, trace_id=state.trace_id), state, retried

    async def message(self, session: str, payload: str, content_type: str, kind: MessageType) -> tuple[str, int]:
        """Take the session's next sequence (resolving it if ``kind`` says so) and publish to its peer;
        returns ``(message_id, sequence)``. A resolve of a session this agent resolved already publishes the
        recorded resolve again when the message it answered is being handled again (see
        SessionStore.advance). Raises SessionNotFound, SessionClosed, PayloadTooLarge, PermissionDenied,
        MeshTimeout, InboxFull, ClaimLost."""
        self.check_payload(payload, content_type)
        await self._check_claim()
        resolve = kind == "session_resolve"
        state, message_id, republish = await self._denials.guard(
            self._sessions.advance(session, resolve=resolve, handling=self._handling(session)),
            "publish", [f"$KV.{SESSIONS_BUCKET}.{self._sessions.key(session)}"])
        sequence = state.resolve_seq if republish else state.sent
        if republish:
            log.info("mesh agent %s: session %s was resolved by this agent before (resolve %s); publishing that "
                     "resolve again", self._handle, session, message_id)
        env = Envelope(message_id=message_id, session_id=session, from_handle=self._handle, to_handle=state.peer,
                       payload=payload, content_type=content_type, sent_at=time.time(), type=kind,
                       trace_id=state.trace_id, sequence=sequence)
        await self._publish(env, await self._manifest_of(state.peer))
        if resolve:
            self._sessions.published(session)
        return message_id, sequence

    def check_payload(self, payload: str, content_type: str, *, overhead: int = 0) -> int:
        """The payload's size in UTF-8 bytes; raises PayloadTooLarge if it is over ``max_payload``, or if
        its envelope (plus ``overhead`` bytes more than a session envelope) would be over the server's."""
        if not isinstance(payload, str):
            raise TypeError(f"payload must be str, got {type(payload).__name__}")
        if not isinstance(content_type, str):
            raise TypeError(f"content_type must be str, got {type(content_type).__name__}")
        size = len(payload.encode("utf-8"))
        if size > self._max_payload:
            raise PayloadTooLarge(size, self._max_payload)
        server_limit = self._nc.max_payload - _ENVELOPE_OVERHEAD - overhead - len(content_type.encode("utf-8"))
        if self._nc.max_payload > 0 and size > server_limit:
            raise PayloadTooLarge(size, max(server_limit, 0))
        return size

    async def require_handle(self, handle: str) -> Manifest | None:
        """The handle's manifest; raises HandleNotFound unless ``handle`` is registered (positive answers are
        cached for 5 s)."""
        now = time.monotonic()
        known = self._known.get(handle)
        if known is not None and known[0] > now:
            return known[1]
        current = await self._registry.get(handle)
        if current is None:
            self._known.pop(handle, None)
            raise HandleNotFound(handle)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[handle] = (now + _KNOWN_HANDLE_TTL, current[0].manifest)
        return current[0].manifest

    async def _manifest_of(self, handle: str) -> Manifest | None:
        """The manifest of a peer (for its lanes), or None when it cannot be read (a reply still goes out)."""
        try:
            return await self.require_handle(handle)
        except (HandleNotFound, nats.errors.Error, TimeoutError):
            return None

    def lane_for(self, manifest: Manifest | None, payload: str) -> Lane:
        """The lane ``payload`` takes to a recipient with ``manifest``: its priority rule decides, for payloads
        up to ``Quotas.priority_payload_max_bytes``."""
        rule = manifest.priority if manifest is not None else None
        if rule is None or len(payload) > self._quotas.priority_payload_max_bytes:
            return "normal"
        if len(payload.encode("utf-8")) > self._quotas.priority_payload_max_bytes:
            return "normal"
        return rule.lane_of(payload)

    async def _check_claim(self) -> None:
        if self._claim_guard is not None:
            await self._claim_guard()

    async def _publish(self, env: Envelope, manifest: Manifest | None) -> None:
        """Publish with ``Nats-Msg-Id = dedup_id(from, message_id)`` in the lane the recipient's manifest gives, retried
        (stored once) on timeouts, waiting on a full inbox; a priority message its stream refuses as too
        large takes the normal lane."""
        lane = self.lane_for(manifest, env.payload)
        data = encode_envelope(env)
        if lane == "priority":
            try:
                await self._send(priority_subject(env.to_handle, env.from_handle), data, env)
                return
            except PayloadTooLarge:
                log.debug("mesh agent %s: %s is too large for the priority lane; sending it in the normal lane",
                          self._handle, env.message_id)
        await self._send(inbox_subject(env.to_handle, env.from_handle), data, env)

    async def _send(self, subject: str, data: bytes, env: Envelope) -> None:
        """Publish; on a full inbox wait (back-off up to 1 s, one probe at a time per recipient) until the
        recipient takes messages again, and raise InboxFull when it took none for ``Quotas.full_wait`` s."""
        to, what = env.to_handle, f"{env.message_id} to {env.to_handle!r}"
        room = self._room(to)
        started = time.monotonic()

        async def attempt() -> None:
            await publish(self._js, self._denials, handle=self._handle, subject=subject, data=data,
                          msg_id=dedup_id(env.from_handle, env.message_id), what=what)
            room.progress = time.monotonic()
            if room.waiting:
                room.waiting = False
                log.info("mesh agent %s: the inbox of %r has room again", self._handle, to)

        try:
            await attempt()
            return
        except StreamFull as full:
            if not room.waiting:
                room.waiting = True
                log.info("mesh agent %s: the inbox of %r is full (%s); waiting for it to take messages (up to "
                         "%.0fs without progress)", self._handle, to,
                         "this sender's quota" if full.reason == "per_sender" else "stream", self._quotas.full_wait)
        backoff = _FULL_BACKOFF
        async with room.probe:
            while True:
                try:
                    await attempt()
                    return
                except StreamFull as full:
                    now = time.monotonic()
                    idle = now - max(started, room.progress)
                    if idle >= self._quotas.full_wait:
                        raise InboxFull(to, self._handle, full.reason, now - started) from full
                    await asyncio.sleep(min(backoff, self._quotas.full_wait - idle))
                    backoff = min(backoff * 2, _FULL_BACKOFF_MAX)

    def _room(self, to: str) -> _Room:
        room = self._rooms.get(to)
        if room is None:
            room = self._rooms[to] = _Room()
            while len(self._rooms) > 1024:
                self._rooms.popitem(last=False)
        return room


def _refusal(exc: nats.js.errors.APIError) -> str:
    """What a stream's refusal of a publish means: ``per_sender``, ``stream``, ``size`` or ``""`` (other)."""
    text = (exc.description or "").lower()
    if "per subject" in text:
        return "per_sender"
    if "message size" in text or "maximum payload" in text:
        return "size"
    if "maximum bytes" in text or "maximum messages" in text or "insufficient" in text or "storage" in text:
        return "stream"
    return ""


class StreamFull(MeshError):
    """A stream refused a publish as full: ``reason`` is ``"per_sender"`` (the sender's quota on that
    subject) or ``"stream"`` (its total)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def dedup_id(sender: str, message_id: str) -> str:
    """The ``Nats-Msg-Id`` of a message: ``<sender>.<message_id>``. JetStream de-duplicates by this header
    across the whole stream, whatever the subject, so with the bare message id two senders that chose the
    same ``message_id`` within the duplicate window would lose the second message (its publish is
    acknowledged as a duplicate and never stored). Handles contain no ``.``, so ids of different senders
    never meet."""
    return f"{sender}.{message_id}"


async def publish(js: JetStreamContext, denials: Denials, *, handle: str, subject: str, data: bytes, msg_id: str,
                  what: str) -> None:
    """Publish ``data`` on ``subject`` with ``Nats-Msg-Id = msg_id``; a timeout is retried (the stream stores
    the message once). Raises PermissionDenied at once when the server denies the subject, MeshTimeout
    after 3 unacknowledged attempts, PayloadTooLarge when the stream refuses the size, StreamFull when it
    refuses it as full, MeshError when it refuses it otherwise."""
    headers = {"Nats-Msg-Id": msg_id}
    for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
        try:
            await denials.guard(js.publish(subject, data, headers=headers, timeout=_PUBLISH_TIMEOUT), "publish",
                                [subject])
            return
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            if attempt == _PUBLISH_ATTEMPTS:
                raise MeshTimeout(f"publish of {what} not acknowledged ({type(exc).__name__})",
                                  timeout=_PUBLISH_TIMEOUT * _PUBLISH_ATTEMPTS) from exc
            log.info("mesh agent %s: publish %s attempt %d failed (%s); retrying", handle, msg_id, attempt,
                     type(exc).__name__)
            await asyncio.sleep(0.2 * attempt)
        except nats.js.errors.APIError as exc:
            refusal = _refusal(exc)
            if refusal == "size":
                raise PayloadTooLarge(len(data), 0) from exc
            if refusal:
                raise StreamFull(f"publish of {what} refused: {exc.description}", refusal) from exc
            raise MeshError(f"publish of {what} refused: {exc}") from exc


class _Room:
    """Back-pressure on one recipient's inbox, shared by this agent's sends to it: the last time a send got
    in, and a lock so that one waiting send at a time probes for room."""

    __slots__ = ("probe", "progress", "waiting")

    def __init__(self) -> None:
        self.progress = time.monotonic()
        self.probe = asyncio.Lock()
        self.waiting = False
