"""Who may delete memory, and what a ``forget`` request asks for. Pure: no I/O.

A forget request is ``{"op": "forget", <selector>}`` with exactly one selector:

* ``"trace_id": "t-81"``: every event of that trace;
* ``"id": 12``: one event, by the id answers cite as ``[#12]``;
* ``"before": "2026-11-01T00:00:00Z"`` (ISO-8601, naive = the configured time zone, or unix
  seconds): every event whose ``occurred_at`` is earlier.

Only handles listed in ``security.admins`` may send one. The handle checked is the message's
``from_handle``, which the mesh SDK guarantees equals the sender named in the NATS subject; it is
authenticated only where the NATS server ties each user to its own handle
(``security.authenticated_senders``, see docs/mesh.md "Security").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Literal

from memory_agent.errors import MemoryAgentError, QueryError
from memory_agent.wire import _time_field as parse_time

__all__ = ["AccessDenied", "ForgetRequest", "check_admin", "parse_forget"]

Selector = Literal["trace_id", "id", "before"]
_SELECTORS: tuple[Selector, ...] = ("trace_id", "id", "before")
_EXAMPLE = '{"op": "forget", "trace_id": "t-81"}, {"op": "forget", "id": 12} or {"op": "forget", "before": "2026-11-01T00:00:00Z"}'


class AccessDenied(MemoryAgentError):
    """The sender may not perform the operation; ``handle`` and ``op`` say who tried what."""

    def __init__(self, handle: str, op: str) -> None:
        super().__init__(
            f"@{handle} may not {op}: only the handles listed in security.admins of @memory's config may"
        )
        self.handle = handle
        self.op = op


@dataclass(frozen=True, slots=True)
class ForgetRequest:
    """What to delete: ``selector`` names the kind, ``value`` is a trace id (str), an event id (int)
    or a time (float, seconds since the epoch, UTC: events with ``occurred_at`` before it)."""

    selector: Selector
    value: str | int | float


def check_admin(handle: str, admins: Collection[str], op: str = "forget") -> None:
    """Raise AccessDenied unless ``handle`` is one of ``admins`` (an empty list allows nobody)."""
    if handle not in admins:
        raise AccessDenied(handle, op)


def parse_forget(args: Mapping[str, Any], *, tz: tzinfo) -> ForgetRequest:
    """Read the arguments of ``{"op": "forget", ...}`` (without ``"op"``); raises QueryError saying how to fix them."""
    unknown = sorted(set(args) - set(_SELECTORS))
    if unknown:
        raise QueryError(f"forget does not take {', '.join(unknown)}: send exactly one of {_EXAMPLE}")
    given = [key for key in _SELECTORS if key in args]
    if len(given) != 1:
        what = "no selector" if not given else f"{' and '.join(given)} together"
        raise QueryError(f"forget got {what}: send exactly one of {_EXAMPLE}")
    key = given[0]
    value = args[key]
    if key == "trace_id":
        if not isinstance(value, str) or not value.strip():
            raise QueryError('forget "trace_id" must be a non-empty string, e.g. "t-81"')
        return ForgetRequest("trace_id", value.strip())
    if key == "id":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f'forget "id" must be a positive whole number (the #id answers cite), not {value!r}')
        return ForgetRequest("id", value)
    return ForgetRequest("before", parse_time(value, "before", tz=tz, error=QueryError))
