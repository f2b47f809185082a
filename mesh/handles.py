"""Handle and room-id validation and the NATS names derived from them (pure, no I/O)."""

from __future__ import annotations

from .constants import (
    DELIVER_PREFIX,
    DURABLE_PREFIX,
    HANDLE_RE,
    INBOX_PREFIX,
    PRIORITY_DURABLE_PREFIX,
    PRIORITY_PREFIX,
    REPLAY_PREFIX,
    ROOM_ID_RE,
    ROOM_PREFIX,
    ROOMS_DURABLE_PREFIX,
)
from .errors import InvalidHandle, RoomNotFound

__all__ = [
    "deliver_subject",
    "durable_name",
    "inbox_filter",
    "inbox_subject",
    "parse_inbox_subject",
    "parse_room_subject",
    "priority_durable_name",
    "priority_filter",
    "priority_subject",
    "replay_consumer_name",
    "reply_prefix",
    "room_filter",
    "room_replay_filter",
    "room_subject",
    "rooms_durable_name",
    "validate_handle",
    "validate_room_id",
]


def validate_handle(handle: str) -> str:
    """Return ``handle`` unchanged if it matches ``^[a-z][a-z0-9_-]{0,62}$``; raises InvalidHandle."""
    if not isinstance(handle, str) or HANDLE_RE.fullmatch(handle) is None:
        raise InvalidHandle(handle if isinstance(handle, str) else repr(handle))
    return handle


def inbox_subject(to: str, sender: str) -> str:
    """``mesh.inbox.<to>.<sender>``: the subject a message from ``sender`` to ``to`` is published on.

    The sender's handle is part of the subject so that a NATS server can allow each user to publish
    only on ``mesh.inbox.*.<its own handle>`` (see examples/nats-server.conf).
    """
    return f"{INBOX_PREFIX}{to}.{sender}"


def inbox_filter(handle: str) -> str:
    """``mesh.inbox.<handle>.*``: every message to ``handle``, whoever sent it (the consumer's filter)."""
    return f"{INBOX_PREFIX}{handle}.*"


def priority_subject(to: str, sender: str) -> str:
    """``mesh.prio.<to>.<sender>``: the priority lane's subject for a message from ``sender`` to ``to``."""
    return f"{PRIORITY_PREFIX}{to}.{sender}"


def priority_filter(handle: str) -> str:
    """``mesh.prio.<handle>.*``: every priority-lane message to ``handle`` (its priority consumer's filter)."""
    return f"{PRIORITY_PREFIX}{handle}.*"


def parse_inbox_subject(subject: str) -> tuple[str, str] | None:
    """``mesh.inbox.<to>.<sender>`` or ``mesh.prio.<to>.<sender>`` -> ``(to, sender)``; None for any other
    subject or invalid handles."""
    for prefix in (INBOX_PREFIX, PRIORITY_PREFIX):
        if subject.startswith(prefix):
            parts = subject[len(prefix):].split(".")
            if len(parts) != 2 or not all(HANDLE_RE.fullmatch(p) for p in parts):
                return None
            return parts[0], parts[1]
    return None


def deliver_subject(handle: str, owner: str) -> str:
    """``mesh.deliver.<handle>.<owner>``: where the durable push consumers of ``handle`` deliver while
    ``owner`` (the first 12 hex digits of the registry owner) holds it. A new owner's consumers deliver to
    its own subject, so the previous owner gets nothing more (see mesh.jetstream.ensure_consumer)."""
    return f"{DELIVER_PREFIX}{handle}.{owner[:12]}"


def durable_name(handle: str) -> str:
    """``inbox_<handle>``: the name of the handle's durable consumer of its normal lane."""
    return DURABLE_PREFIX + handle


def priority_durable_name(handle: str) -> str:
    """``priority_<handle>``: the name of the handle's durable consumer of its priority lane."""
    return PRIORITY_DURABLE_PREFIX + handle


def reply_prefix(handle: str) -> str:
    """``_INBOX.<handle>``: the prefix of the agent's NATS request inboxes (JetStream API replies).

    Scoping it per handle lets a server grant each user ``subscribe: _INBOX.<handle>.>`` instead of
    ``_INBOX.>``, so an agent cannot read the API replies meant for another.
    """
    return f"_INBOX.{handle}"


def validate_room_id(room_id: str) -> str:
    """Return ``room_id`` unchanged if it can be a room id (one NATS token of ``[A-Za-z0-9_-]``, at most
    128 characters); raises RoomNotFound otherwise, since no such room can exist."""
    if not isinstance(room_id, str) or ROOM_ID_RE.fullmatch(room_id) is None:
        raise RoomNotFound(room_id if isinstance(room_id, str) else repr(room_id))
    return room_id


def room_subject(member: str, room_id: str, poster: str) -> str:
    """``mesh.room.<member>.<room_id>.<poster>``: ``member``'s copy of an event ``poster`` sent to the room.

    The member comes first so that a NATS server can let each user read only its own copies
    (``mesh.room.<own handle>.>``), the poster last so that it can let each user write only as itself
    (``mesh.room.*.*.<own handle>``); see examples/nats-server.conf.
    """
    return f"{ROOM_PREFIX}{member}.{room_id}.{poster}"


def room_filter(member: str) -> str:
    """``mesh.room.<member>.>``: every room event copied to ``member`` (its durable consumer's filter)."""
    return f"{ROOM_PREFIX}{member}.>"


def room_replay_filter(member: str, room_id: str) -> str:
    """``mesh.room.<member>.<room_id>.*``: ``member``'s copies of one room's events (what a replay reads)."""
    return f"{ROOM_PREFIX}{member}.{room_id}.*"


def parse_room_subject(subject: str) -> tuple[str, str, str] | None:
    """``mesh.room.<member>.<room_id>.<poster>`` -> ``(member, room_id, poster)``; None for anything else."""
    if not subject.startswith(ROOM_PREFIX):
        return None
    parts = subject[len(ROOM_PREFIX):].split(".")
    if len(parts) != 3 or not (HANDLE_RE.fullmatch(parts[0]) and ROOM_ID_RE.fullmatch(parts[1])
                               and HANDLE_RE.fullmatch(parts[2])):
        return None
    return parts[0], parts[1], parts[2]


def rooms_durable_name(handle: str) -> str:
    """``rooms_<handle>``: the durable consumer that delivers ``handle``'s room events."""
    return ROOMS_DURABLE_PREFIX + handle


def replay_consumer_name(handle: str) -> str:
    """``replay_<handle>``: the short-lived consumer ``replay_room`` reads ``handle``'s copies with."""
    return REPLAY_PREFIX + handle
