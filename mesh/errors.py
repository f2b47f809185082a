"""The one error root of ``mesh`` and its subclasses; each carries what failed as typed attributes."""

from __future__ import annotations

__all__ = [
    "AgentClosed",
    "AlreadyRegisteredError",
    "AuthenticationError",
    "BinaryNotFoundError",
    "BridgeDiedError",
    "BridgeError",
    "ClaimLost",
    "EnvelopeError",
    "HandleNotFound",
    "HandleTaken",
    "InboxFull",
    "InvalidHandle",
    "MeshError",
    "MeshTimeout",
    "NotParticipant",
    "NotRegistered",
    "NotRegisteredError",
    "NotRoomMember",
    "PayloadTooLarge",
    "PermissionDenied",
    "Retry",
    "RoomClosed",
    "RoomFull",
    "RoomNotFound",
    "ServerError",
    "SessionClosed",
    "SessionNotFound",
    "TailbusError",
]


class MeshError(Exception):
    """Root of every error ``mesh`` raises on purpose.

    ``request_type``: the operation that failed, named as tailbus's bridge names it (``"open"``,
    ``"send"``, ``"post_room"``, ``"replay_room"`` ...; ``""`` outside an agent method). ``error``: the
    message. With these two, code written for tailbus's ``BridgeError`` (an alias of this class) reads
    a mesh error the same way.
    """

    request_type: str = ""

    @property
    def error(self) -> str:
        """The error message (tailbus's ``BridgeError.error``)."""
        return str(self)


class InvalidHandle(MeshError, ValueError):
    """A handle that does not match ``^[a-z][a-z0-9_-]{0,62}$``; refused before anything reaches NATS."""

    def __init__(self, handle: str) -> None:
        super().__init__(
            f"invalid handle {handle!r}: a handle is 1-63 characters, a lowercase letter first, "
            "then lowercase letters, digits, '_' or '-'"
        )
        self.handle = handle


class HandleNotFound(MeshError):
    """The handle was never registered (or its ephemeral registration was removed)."""

    def __init__(self, handle: str) -> None:
        super().__init__(f"handle {handle!r} is not registered on the mesh")
        self.handle = handle


class HandleTaken(MeshError):
    """The handle is held by another live agent (its heartbeat has not expired), or by a replica group this
    agent is not a member of (see :mod:`mesh.replicas`); ``reason`` says which, and what to change."""

    def __init__(self, handle: str, reason: str = "") -> None:
        super().__init__(
            f"handle {handle!r} is taken: {reason}" if reason else
            f"handle {handle!r} is held by another live agent; it can be claimed once that agent "
            "closes or its heartbeat expires"
        )
        self.handle = handle
        self.reason = reason


class ClaimLost(MeshError):
    """Another agent took this agent's handle while this one held it: this one had stopped heartbeating
    long enough for its claim to expire (it was frozen, cut off from NATS, or its host's clock jumped).

    The agent stopped consuming at once and acknowledges nothing more (the new owner gets what it had not
    acknowledged); every later operation raises this. ``run_forever()`` raises it, and
    ``AsyncAgent(on_claim_lost=...)`` is called with it. Restart the process: it then waits as a standby
    until the handle is free again.
    """

    def __init__(self, handle: str, detail: str = "") -> None:
        super().__init__(
            f"handle {handle!r} was claimed by another agent while this one held it"
            + (f" ({detail})" if detail else "")
            + ": this agent stopped consuming and acknowledges nothing more; restart it to wait as a standby"
        )
        self.handle = handle


class InboxFull(MeshError):
    """The recipient's inbox has no room for this message, and none came free within ``waited`` seconds.

    ``reason`` is ``"per_sender"`` (this sender already has as many messages waiting there as the quota
    allows, ``Quotas.per_sender_messages``: the recipient has not taken them yet, or is offline) or
    ``"stream"`` (the inbox stream as a whole is full). Nothing was published; sending again later, with
    the same ``message_id``, is safe.
    """

    def __init__(self, handle: str, sender: str, reason: str, waited: float) -> None:
        what = (f"{sender!r} already has as many messages waiting there as its quota allows"
                if reason == "per_sender" else "the inbox stream is full")
        super().__init__(f"the inbox of {handle!r} has no room: {what} (waited {waited:.1f}s); send again later")
        self.handle = handle
        self.sender = sender
        self.reason = reason
        self.waited = waited


class NotRegistered(MeshError):
    """The operation needs ``register()`` first (sessions need a durable inbox for the replies)."""

    def __init__(self, handle: str) -> None:
        super().__init__(f"agent {handle!r} must call register() before opening or using sessions")
        self.handle = handle


class SessionNotFound(MeshError):
    """No session with this id exists (never opened, or expired from the session bucket)."""

    def __init__(self, session: str) -> None:
        super().__init__(f"session {session!r} does not exist")
        self.session = session


class SessionClosed(MeshError):
    """The session was resolved; it accepts no more messages."""

    def __init__(self, session: str) -> None:
        super().__init__(f"session {session!r} is resolved and accepts nothing more")
        self.session = session


class NotParticipant(MeshError):
    """The handle is not one of the two participants of the session."""

    def __init__(self, session: str, handle: str) -> None:
        super().__init__(f"handle {handle!r} is not a participant of session {session!r}")
        self.session = session
        self.handle = handle


class PayloadTooLarge(MeshError, ValueError):
    """The payload (UTF-8 bytes) or the encoded envelope exceeds the limit; nothing was published."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class EnvelopeError(MeshError, ValueError):
    """Bytes that are not a valid mesh envelope; ``str(err)`` says which check failed."""


class MeshTimeout(MeshError, TimeoutError):
    """An operation did not complete within ``timeout`` seconds; catchable as ``TimeoutError`` too."""

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class AgentClosed(MeshError):
    """The agent was closed: its pending ``request()`` calls and any later operation fail with this."""

    def __init__(self, handle: str, what: str = "") -> None:
        super().__init__(f"agent {handle!r} is closed" + (f" ({what})" if what else ""))
        self.handle = handle


class RoomNotFound(MeshError):
    """No room with this id exists (never created, malformed id, or expired after 30 days unchanged)."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id[:140]!r} does not exist")
        self.room_id = room_id


class RoomClosed(MeshError):
    """The room was closed: it refuses posts and joins (members may still replay and leave)."""

    def __init__(self, room_id: str) -> None:
        # "room ... is closed" is the wording tailbus's daemon uses; tailbus agents match on it.
        super().__init__(f"room {room_id!r} is closed and accepts no more posts or members")
        self.room_id = room_id


class NotRoomMember(MeshError):
    """The handle is not a member of the room (it may ``join_room`` first, unless the room is closed)."""

    def __init__(self, room_id: str, handle: str) -> None:
        super().__init__(f"handle {handle!r} is not a member of room {room_id!r}")
        self.room_id = room_id
        self.handle = handle


class RoomFull(MeshError):
    """The room reached one of its limits; nothing was posted. ``limit`` names which: ``"max_events"``
    (events retained), ``"max_bytes"`` (payload bytes posted) or ``"max_members"``; ``value`` is that
    limit. Close the room and open a new one, or create rooms with larger limits."""

    def __init__(self, room_id: str, limit: str, value: int) -> None:
        super().__init__(f"room {room_id!r} is full: it reached its {limit} of {value}; close it and create "
                         "a new room (create_room takes max_events and max_bytes)")
        self.room_id = room_id
        self.limit = limit
        self.value = value


class Retry(MeshError):
    """Raised by a handler to have its message delivered again after ``delay`` seconds.

    Any other exception from a handler is logged and the message dropped (as tailbus does); a process
    that dies before its handler returns still gets the message redelivered. After ``max_deliver``
    deliveries the message is given up (terminated) and an error is logged. (Like arq's ``Retry``.)
    """

    def __init__(self, delay: float = 1.0, reason: str = "") -> None:
        super().__init__(f"handler asked for a retry in {delay:g}s" + (f": {reason}" if reason else ""))
        self.delay = delay


class ServerError(MeshError):
    """The embedded nats-server could not be found, started, or died; carries its last log lines."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(f"{message}\n--- nats-server log (last lines) ---\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


class AuthenticationError(MeshError):
    """The NATS server refused the connection's credentials, or the TLS handshake failed.

    ``servers``: the URLs tried; ``reason``: the server's or TLS library's message (never a secret).
    Raised at once by ``start()``, instead of retrying credentials that cannot work.
    """

    def __init__(self, servers: list[str], reason: str) -> None:
        super().__init__(
            f"NATS at {', '.join(servers)} refused the connection: {reason}. Check the credentials "
            "(token, user/password, NKey seed, .creds file) and the TLS CA/certificate it was given"
        )
        self.servers = servers
        self.reason = reason


class PermissionDenied(MeshError):
    """The NATS server's permissions do not let this user publish or subscribe on ``subject``.

    ``operation`` is ``"publish"`` or ``"subscribe"``; ``handle`` is the agent that tried.
    """

    def __init__(self, handle: str, operation: str, subject: str) -> None:
        super().__init__(
            f"the NATS server denied {handle!r} permission to {operation} on {subject!r}: the NATS user "
            "this agent connects as is not allowed to (see examples/nats-server.conf for the permissions "
            "an agent needs)"
        )
        self.handle = handle
        self.operation = operation
        self.subject = subject


# ── tailbus's names, for code written against tailbus's SDK ────────────────
#: tailbus's root error.
TailbusError = MeshError
#: tailbus raises it for every error its daemon returns (unknown handle, closed room ...): here, every
#: MeshError, with ``.error`` and ``.request_type``.
BridgeError = MeshError
#: tailbus: the bridge process exited. Here: the agent was closed under a pending call.
BridgeDiedError = AgentClosed
#: tailbus: an operation before ``register()``.
NotRegisteredError = NotRegistered
#: tailbus: ``register()`` called twice. Here registering again re-publishes; the nearest failure is
#: another live agent holding the handle.
AlreadyRegisteredError = HandleTaken
#: tailbus: the ``tailbus`` binary is missing. Here: the ``nats-server`` binary of an embedded server.
BinaryNotFoundError = ServerError
