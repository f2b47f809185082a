"""The sending side of an agent: open sessions, send and resolve in them, publish envelopes.

One Sender per connected agent. Session rules are enforced here, under the session record's
compare-and-set (see :mod:`mesh.sessions`); each message is published on
``mesh.inbox.<to>.<from>`` with ``Nats-Msg-Id = message_id``, retried (stored once) on timeouts, and
a publish the server's permissions deny raises PermissionDenied at once (see :mod:`mesh.connection`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .connection import Denials
from .constants import SESSIONS_BUCKET
from .envelope import Envelope, encode_envelope
from .errors import HandleNotFound, MeshError, MeshTimeout, PayloadTooLarge
from .handles import inbox_subject, validate_handle
from .registry import Registry
from .sessions import SessionStore
from .types import MessageType, Opened

__all__ = ["Sender", "publish"]

log = logging.getLogger("mesh.agent")

#: Upper bound of the envelope's bytes besides payload and content_type (ids, handles, keys).
_ENVELOPE_OVERHEAD = 512
#: Seconds a positive "this handle is registered" lookup is trusted.
_KNOWN_HANDLE_TTL = 5.0
_PUBLISH_ATTEMPTS = 3
#: Seconds one publish waits for the stream's acknowledgement.
_PUBLISH_TIMEOUT = 5.0


class Sender:
    """Sends as ``handle`` over ``nc``/``js``; ``max_payload`` is the limit on a payload, UTF-8 bytes."""

    def __init__(self, handle: str, *, nc: NATS, js: JetStreamContext, registry: Registry, sessions: SessionStore,
                 denials: Denials, max_payload: int) -> None:
        self._handle = handle
        self._nc = nc
        self._js = js
        self._registry = registry
        self._sessions = sessions
        self._denials = denials
        self._max_payload = max_payload
        self._known: dict[str, float] = {}

    async def open(self, session: str, to: str, payload: str, *, content_type: str, trace_id: str | None) -> Opened:
        """Create the session record and publish its first message. Raises InvalidHandle,
        HandleNotFound, PayloadTooLarge, PermissionDenied, MeshTimeout."""
        validate_handle(to)
        self.check_payload(payload, content_type)
        await self.require_handle(to)
        trace = trace_id or str(uuid.uuid4())
        await self._denials.guard(self._sessions.open(session, self._handle, to, trace), "publish",
                                  [f"$KV.{SESSIONS_BUCKET}.{session}"])
        env = Envelope(
            message_id=str(uuid.uuid4()),
            session_id=session,
            from_handle=self._handle,
            to_handle=to,
            payload=payload,
            content_type=content_type,
            sent_at=time.time(),
            type="session_open",
            trace_id=trace,
            sequence=1,
        )
        await self._publish(env)
        return Opened(session=session, message_id=env.message_id, trace_id=trace)

    async def message(self, session: str, payload: str, content_type: str, kind: MessageType) -> tuple[str, int]:
        """Take the session's next sequence (resolving it if ``kind`` says so) and publish; returns
        ``(message_id, sequence)``. Raises SessionNotFound, NotParticipant, SessionClosed,
        PayloadTooLarge, PermissionDenied, MeshTimeout."""
        self.check_payload(payload, content_type)
        state = await self._denials.guard(
            self._sessions.advance(session, self._handle, resolve=kind == "session_resolve"),
            "publish", [f"$KV.{SESSIONS_BUCKET}.{session}"])
        env = Envelope(
            message_id=str(uuid.uuid4()),
            session_id=session,
            from_handle=self._handle,
            to_handle=state.peer_of(self._handle),
            payload=payload,
            content_type=content_type,
            sent_at=time.time(),
            type=kind,
            trace_id=state.trace_id,
            sequence=state.seq,
        )
        await self._publish(env)
        return env.message_id, env.sequence

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

    async def require_handle(self, handle: str) -> None:
        """Raises HandleNotFound unless ``handle`` is registered (positive answers are cached for 5 s)."""
        expires = self._known.get(handle)
        now = time.monotonic()
        if expires is not None and expires > now:
            return
        if await self._registry.get(handle) is None:
            self._known.pop(handle, None)
            raise HandleNotFound(handle)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[handle] = now + _KNOWN_HANDLE_TTL

    async def _publish(self, env: Envelope) -> None:
        """Publish with ``Nats-Msg-Id = message_id``, retried (stored once) on timeouts."""
        await publish(self._js, self._denials, handle=self._handle, subject=inbox_subject(env.to_handle, env.from_handle),
                      data=encode_envelope(env), msg_id=env.message_id, what=f"{env.message_id} to {env.to_handle!r}")


async def publish(js: JetStreamContext, denials: Denials, *, handle: str, subject: str, data: bytes, msg_id: str,
                  what: str) -> None:
    """Publish ``data`` on ``subject`` with ``Nats-Msg-Id = msg_id``; a timeout is retried (the stream stores
    the message once). Raises PermissionDenied at once when the server denies the subject, MeshTimeout
    after 3 unacknowledged attempts, MeshError when the stream refuses it (full, no such stream)."""
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
            raise MeshError(f"publish of {what} refused: {exc}") from exc
