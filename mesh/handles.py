"""Handle validation and the NATS names derived from a handle (pure, no I/O)."""

from __future__ import annotations

from .constants import DELIVER_PREFIX, DURABLE_PREFIX, HANDLE_RE, INBOX_PREFIX
from .errors import InvalidHandle

__all__ = ["deliver_subject", "durable_name", "inbox_subject", "validate_handle"]


def validate_handle(handle: str) -> str:
    """Return ``handle`` unchanged if it matches ``^[a-z][a-z0-9_-]{0,62}$``; raises InvalidHandle."""
    if not isinstance(handle, str) or HANDLE_RE.fullmatch(handle) is None:
        raise InvalidHandle(handle if isinstance(handle, str) else repr(handle))
    return handle


def inbox_subject(handle: str) -> str:
    """``mesh.inbox.<handle>``: the subject messages to ``handle`` are published on."""
    return INBOX_PREFIX + handle


def deliver_subject(handle: str) -> str:
    """``mesh.deliver.<handle>``: where the handle's durable push consumer delivers."""
    return DELIVER_PREFIX + handle


def durable_name(handle: str) -> str:
    """``inbox_<handle>``: the name of the handle's durable consumer."""
    return DURABLE_PREFIX + handle
