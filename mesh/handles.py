"""Handle validation and the NATS names derived from a handle (pure, no I/O)."""

from __future__ import annotations

from .constants import DELIVER_PREFIX, DURABLE_PREFIX, HANDLE_RE, INBOX_PREFIX
from .errors import InvalidHandle

__all__ = [
    "deliver_subject",
    "durable_name",
    "inbox_filter",
    "inbox_subject",
    "parse_inbox_subject",
    "reply_prefix",
    "validate_handle",
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


def parse_inbox_subject(subject: str) -> tuple[str, str] | None:
    """``mesh.inbox.<to>.<sender>`` -> ``(to, sender)``; None for any other subject or invalid handles."""
    if not subject.startswith(INBOX_PREFIX):
        return None
    parts = subject[len(INBOX_PREFIX):].split(".")
    if len(parts) != 2 or not all(HANDLE_RE.fullmatch(p) for p in parts):
        return None
    return parts[0], parts[1]


def deliver_subject(handle: str) -> str:
    """``mesh.deliver.<handle>``: where the handle's durable push consumer delivers."""
    return DELIVER_PREFIX + handle


def durable_name(handle: str) -> str:
    """``inbox_<handle>``: the name of the handle's durable consumer."""
    return DURABLE_PREFIX + handle


def reply_prefix(handle: str) -> str:
    """``_INBOX.<handle>``: the prefix of the agent's NATS request inboxes (JetStream API replies).

    Scoping it per handle lets a server grant each user ``subscribe: _INBOX.<handle>.>`` instead of
    ``_INBOX.>``, so an agent cannot read the API replies meant for another.
    """
    return f"_INBOX.{handle}"
