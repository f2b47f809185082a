"""Deleting events: who may, what a ``forget`` request asks for, and the retention sweep.

A forget request is ``{"op": "forget", <selector>}`` with exactly one selector:

* ``"trace_id": "t-81"``: every event of that trace;
* ``"id": 12``: one event, by the id answers cite as ``[#12]``;
* ``"before": "2026-11-01T00:00:00Z"`` (ISO-8601, naive = the configured time zone, or unix
  seconds): every event whose ``occurred_at`` is earlier.

Only handles listed in ``security.admins`` may send one (:func:`check_admin`). The handle checked is the
message's ``from_handle``, which the mesh SDK guarantees equals the sender named in the NATS subject; it
is authenticated only where the NATS server ties each user to its own handle
(``security.authenticated_senders``, see docs/mesh.md "Security").

An :class:`Eraser` deletes events from SQLite (the FTS5 rows go with them, by trigger) and then from
the FAISS index, ``batch`` events per SQLite transaction, yielding to the event loop between batches
so that reports keep being stored meanwhile. Once deleted from SQLite an event is gone from every
answer (retrieval reads events from SQLite); the FAISS file on disk loses its vector at the next
index save (``forget`` saves at once; the sweep leaves it to the periodic save) or, after a crash,
when the index is found stale and rebuilt from SQLite at start.

:func:`sweep_forever` is the retention task: every ``interval`` seconds it deletes the events whose
``occurred_at`` is more than ``days`` days before now; an event dated more than ``max_clock_skew``
after its receipt (a sender's clock running ahead) is expired by its ``received_at`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from memory_agent.errors import AccessDenied, InvalidArgument, QueryError, excerpt
from memory_agent.types import Filters, TimeWindow
from memory_agent.wire import parse_time

if TYPE_CHECKING:
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.store.events import EventStore

__all__ = ["Eraser", "ForgetRequest", "check_admin", "parse_forget", "sweep_forever"]

log = logging.getLogger(__name__)

_DAY = 86_400.0
#: Seconds a report may be dated after its receipt before it counts as dated ahead (``max_clock_skew``).
DEFAULT_CLOCK_SKEW = _DAY

Selector = Literal["trace_id", "id", "before"]
_SELECTORS: tuple[Selector, ...] = ("trace_id", "id", "before")
_EXAMPLE = '{"op": "forget", "trace_id": "t-81"}, {"op": "forget", "id": 12} or {"op": "forget", "before": "2026-11-01T00:00:00Z"}'


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
        raise QueryError(f"forget does not take {excerpt(', '.join(unknown), quote=False)}: send exactly one of {_EXAMPLE}")
    given = [key for key in _SELECTORS if key in args]
    if len(given) != 1:
        what = "no selector" if not given else f"{' and '.join(given)} together"
        raise QueryError(f"forget got {what}: send exactly one of {_EXAMPLE}")
    key = given[0]
    value = args[key]
    if key == "trace_id":
        if not isinstance(value, str) or not value.strip():
            raise QueryError('forget "trace_id" must be a non-empty string, e.g. "t-81"', field="trace_id")
        return ForgetRequest("trace_id", value.strip())
    if key == "id":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise QueryError(f'forget "id" must be a positive whole number (the #id answers cite), not {excerpt(value)}', field="id")
        return ForgetRequest("id", value)
    return ForgetRequest("before", parse_time(value, "before", tz=tz, error=QueryError))


class Eraser:
    """Deletes events from the store and the vector index; ``on_removed(n)`` is told after each batch.

    ``index`` is ``None`` while no model is loaded (the index, opened later, is repaired from SQLite);
    ``vector_lock`` is held per batch so the embedding backlog never adds the vector of a deleted row.
    """

    def __init__(self, store: EventStore, index: AsyncIndex | None, *, batch: int = 500,
                 on_removed: Callable[[int], None] | None = None, vector_lock: asyncio.Lock | None = None) -> None:
        if batch < 1:
            raise InvalidArgument("batch", f"must be >= 1, not {batch}")
        self._store = store
        self.index = index
        self._batch = batch
        self._on_removed = on_removed
        self._lock = vector_lock or asyncio.Lock()

    async def forget(self, request: ForgetRequest, *, by: str = "", request_id: str = "") -> int:
        """Delete what ``request`` selects; returns how many events were deleted (0 if none matched).
        ``by`` and ``request_id`` are not used here (see :class:`memory_agent.protocols.Forgetter`)."""
        if request.selector == "id":
            ids: np.ndarray | None = np.array([int(request.value)], dtype=np.int64)
        elif request.selector == "trace_id":
            ids = await self._store.candidate_ids(None, Filters(trace_id=(str(request.value),)))
        else:
            ids = await self._store.candidate_ids(TimeWindow(until=float(request.value)), Filters())
        return await self.delete(ids if ids is not None else np.empty(0, dtype=np.int64))

    async def delete_before(self, cutoff: float, *, future_skew: float = DEFAULT_CLOCK_SKEW) -> int:
        """Delete every event older than ``cutoff`` (seconds since the epoch, UTC): by ``occurred_at``, or by
        ``received_at`` for an event dated more than ``future_skew`` seconds after its receipt (so a clock
        running ahead cannot keep a report forever). Returns the count."""
        return await self.delete(await self._store.expired_ids(cutoff, future_skew=future_skew))

    async def delete(self, ids: np.ndarray) -> int:
        """Delete ``ids`` (int64) in batches: SQLite (with FTS5) first, then FAISS; returns rows deleted."""
        deleted = 0
        for start in range(0, len(ids), self._batch):
            chunk = ids[start : start + self._batch]
            async with self._lock:
                n = await self._store.delete(chunk)
                if self.index is not None:
                    await self.index.remove(chunk)
            deleted += n
            if self._on_removed is not None and n:
                self._on_removed(n)
            await asyncio.sleep(0)  # let ingest and questions run between batches
        return deleted


async def sweep_forever(eraser: Eraser, *, days: float, interval: float, future_skew: float = DEFAULT_CLOCK_SKEW,
                        clock: Callable[[], float] = time.time) -> None:
    """Every ``interval`` s (the first time at once), delete events older than ``days`` days (see
    :meth:`Eraser.delete_before` for events dated ahead of their receipt); runs until cancelled.

    ``clock`` gives seconds since the epoch, UTC. A failed sweep is logged and tried again next time.
    """
    while True:
        started = time.perf_counter()
        cutoff = clock() - days * _DAY
        try:
            removed = await eraser.delete_before(cutoff, future_skew=future_skew)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("retention sweep failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, interval)
        else:
            if removed:
                log.info("retention: deleted %d events older than %g days in %.1f s", removed, days,
                         time.perf_counter() - started)
            else:
                log.debug("retention: nothing older than %g days", days)
        await asyncio.sleep(interval)
