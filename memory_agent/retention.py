"""Deleting events: ``forget`` requests and the retention sweep.

An :class:`Eraser` deletes events from SQLite (the FTS5 rows go with them, by trigger) and then from
the FAISS index, ``batch`` events per SQLite transaction, yielding to the event loop between batches
so that reports keep being stored meanwhile. Once deleted from SQLite an event is gone from every
answer (retrieval reads events from SQLite); the FAISS file on disk loses its vector at the next
index save (``forget`` saves at once; the sweep leaves it to the periodic save) or, after a crash,
when the index is found stale and rebuilt from SQLite at start.

:func:`sweep_forever` is the retention task: every ``interval`` seconds it deletes the events whose
``occurred_at`` is more than ``days`` days before now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from memory_agent.access import ForgetRequest
from memory_agent.models import Filters, TimeWindow

__all__ = ["Eraser", "sweep_forever"]

log = logging.getLogger(__name__)

_DAY = 86_400.0


class EraseStore(Protocol):
    async def candidate_ids(self, window: TimeWindow | None, filters: Filters) -> np.ndarray | None: ...

    async def delete(self, ids: Sequence[int] | np.ndarray) -> int: ...


class EraseIndex(Protocol):
    async def remove(self, ids: Sequence[int] | np.ndarray) -> int: ...


class Eraser:
    """Deletes events from the store and the vector index; ``on_removed(n)`` is told after each batch."""

    def __init__(self, store: EraseStore, index: EraseIndex, *, batch: int = 500,
                 on_removed: Callable[[int], None] | None = None) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._store = store
        self._index = index
        self._batch = batch
        self._on_removed = on_removed

    async def forget(self, request: ForgetRequest) -> int:
        """Delete what ``request`` selects; returns how many events were deleted (0 if none matched)."""
        if request.selector == "id":
            ids: np.ndarray | None = np.array([int(request.value)], dtype=np.int64)
        elif request.selector == "trace_id":
            ids = await self._store.candidate_ids(None, Filters(trace_id=(str(request.value),)))
        else:
            ids = await self._store.candidate_ids(TimeWindow(until=float(request.value)), Filters())
        return await self.delete(ids if ids is not None else np.empty(0, dtype=np.int64))

    async def delete_before(self, cutoff: float) -> int:
        """Delete every event with ``occurred_at < cutoff`` (seconds since the epoch, UTC); returns the count."""
        ids = await self._store.candidate_ids(TimeWindow(until=cutoff), Filters())
        return await self.delete(ids if ids is not None else np.empty(0, dtype=np.int64))

    async def delete(self, ids: np.ndarray) -> int:
        """Delete ``ids`` (int64) in batches: SQLite (with FTS5) first, then FAISS; returns rows deleted."""
        deleted = 0
        for start in range(0, len(ids), self._batch):
            chunk = ids[start : start + self._batch]
            n = await self._store.delete(chunk)
            await self._index.remove(chunk)
            deleted += n
            if self._on_removed is not None and n:
                self._on_removed(n)
            await asyncio.sleep(0)  # let ingest and questions run between batches
        return deleted


async def sweep_forever(eraser: Eraser, *, days: float, interval: float,
                        clock: Callable[[], float] = time.time) -> None:
    """Every ``interval`` s (the first time at once), delete events older than ``days`` days; runs until cancelled.

    ``clock`` gives seconds since the epoch, UTC. A failed sweep is logged and tried again next time.
    """
    while True:
        started = time.perf_counter()
        cutoff = clock() - days * _DAY
        try:
            removed = await eraser.delete_before(cutoff)
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
