"""The message an agent is handling, as a context variable (the execution context of tailbus-style chains).

While an ``on_message`` handler runs, :func:`current_message` returns the :class:`~mesh.types.Message`
(or :class:`~mesh.types.RoomEvent`) it was given, and :func:`current_trace_id` its trace id, in the handler and in everything it awaits or calls
(sync handlers too: they run on a worker thread with a copy of the context). Libraries built on the mesh
use it to follow the chain without the caller passing it: shared memory's workflow scope is the trace id of
the message being handled. Outside a handler both return ``None``.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from .types import Message, RoomEvent

__all__ = ["current_message", "current_trace_id", "reset_current_message", "set_current_message"]

_current: ContextVar[Message | RoomEvent | None] = ContextVar("mesh_current_message", default=None)


def current_message() -> Message | RoomEvent | None:
    """The message whose handler is running in this context, or ``None``."""
    return _current.get()


def current_trace_id() -> str | None:
    """The trace id of :func:`current_message`, or ``None`` outside a handler."""
    message = _current.get()
    return None if message is None else message.trace_id


def set_current_message(message: Message | RoomEvent | None) -> Token[Message | RoomEvent | None]:
    """Make ``message`` current in this context (the dispatcher does it around each handler); returns the
    token for :func:`reset_current_message`."""
    return _current.set(message)


def reset_current_message(token: Token[Message | RoomEvent | None]) -> None:
    """Undo :func:`set_current_message`."""
    _current.reset(token)
