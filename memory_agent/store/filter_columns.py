"""An in-memory copy of the columns that questions filter on: time, event, service and sender.

A time window and filters select ids that restrict the vector search. Read from SQLite a wide selection
costs a Python tuple per row; here it is a few numpy comparisons over every row, hundreds of times faster
(docs/benchmarks.md#design-filter-columns). 36 bytes per event: 8 for the id, 8 for ``occurred_at``, 8
for ``received_at`` (to leave out reports dated ahead of their receipt, and to expire them by it), 4 for
each of the three columns, stored as codes of their distinct values.

:class:`FilterColumns` is kept in sync by :class:`memory_agent.store.events.EventStore` after every
commit (``EventStore._transaction``). Rows are appended in id order; a deleted row is only marked dead.
Readers may run on another thread than the writer: they work on the first ``n`` rows as they were when they started.
Trace ids are not kept (a trace filter is selective, and SQL answers it from its index).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from memory_agent.types import Filters, TimeWindow

__all__ = ["FILTER_FIELDS", "FilterColumns", "in_sorted"]

#: The stored fields a row of :class:`FilterColumns` is built from, in the order its rows give them.
FILTER_FIELDS = ("id", "occurred_at", "event", "service", "from_handle", "received_at")

_NONE = -1  # code of a NULL service


def in_sorted(ids: Iterable[int] | np.ndarray, held: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are in ``held`` (ascending int64, as :meth:`FilterColumns.select` and
    ``EventStore.candidate_ids`` give them): ``(len(ids),)`` bool, by binary search."""
    keys = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
    if not len(held):
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(held, keys), len(held) - 1)
    return np.asarray(held[at] == keys)


class _Codes:
    """Distinct strings <-> int32 codes (``None`` is -1)."""

    def __init__(self) -> None:
        self.by_value: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        if value is None:
            return _NONE
        found = self.by_value.get(value)
        if found is None:
            found = self.by_value[value] = len(self.by_value)
        return found

    def lookup(self, values: Iterable[str]) -> np.ndarray:
        """Codes of the known ``values`` (unknown ones match nothing)."""
        return np.array([self.by_value[v] for v in values if v in self.by_value], dtype=np.int32)


class FilterColumns:
    """Ids with ``occurred_at`` and ``received_at`` (seconds since the epoch, UTC) and codes of event,
    service and sender.

    Build with :meth:`from_rows` (rows of :data:`FILTER_FIELDS`), then
    :meth:`add` new rows (ids above every id held) and :meth:`remove` deleted ones. :meth:`select` gives
    the ids a window and filters allow.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._lock = threading.Lock()
        self._codes = (_Codes(), _Codes(), _Codes())
        self._n = 0
        capacity = max(capacity, 16)
        self._ids: np.ndarray = np.zeros(capacity, dtype=np.int64)
        self._times: np.ndarray = np.zeros(capacity, dtype=np.float64)
        self._received: np.ndarray = np.zeros(capacity, dtype=np.float64)
        self._cols: np.ndarray = np.zeros((3, capacity), dtype=np.int32)
        self._alive: np.ndarray = np.zeros(capacity, dtype=bool)

    def _grow(self, capacity: int) -> None:
        n = self._n
        ids = np.zeros(capacity, dtype=np.int64)
        times = np.zeros(capacity, dtype=np.float64)
        received = np.zeros(capacity, dtype=np.float64)
        codes = np.zeros((3, capacity), dtype=np.int32)
        alive = np.zeros(capacity, dtype=bool)
        ids[:n], times[:n], received[:n] = self._ids[:n], self._times[:n], self._received[:n]
        codes[:, :n], alive[:n] = self._cols[:, :n], self._alive[:n]
        self._ids, self._times, self._received, self._cols, self._alive = ids, times, received, codes, alive

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> FilterColumns:
        """From rows of :data:`FILTER_FIELDS` in any order (ids distinct)."""
        columns = cls(capacity=len(rows) + 1024)
        ids, times, received, codes = columns._arrays(rows)
        order = np.argsort(ids, kind="stable")
        columns._append(ids[order], times[order], received[order], codes[:, order])
        return columns

    def _arrays(self, rows: Sequence[Sequence[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m = len(rows)
        ids = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=m)
        times = np.fromiter((float(r[1]) for r in rows), dtype=np.float64, count=m)
        received = np.fromiter((float(r[5]) for r in rows), dtype=np.float64, count=m)
        codes = np.empty((3, m), dtype=np.int32)
        for col, table in enumerate(self._codes):
            codes[col] = np.fromiter((table.code(r[2 + col]) for r in rows), dtype=np.int32, count=m)
        return ids, times, received, codes

    def __len__(self) -> int:
        """Live rows."""
        return int(self._alive[: self._n].sum())

    @property
    def max_id(self) -> int:
        return int(self._ids[self._n - 1]) if self._n else 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append rows of :data:`FILTER_FIELDS`, ids ascending and above every id
        held (SQLite's AUTOINCREMENT guarantees it). Raises ``ValueError`` otherwise."""
        if not rows:
            return
        with self._lock:
            self._append(*self._arrays(rows))

    def _append(self, ids: np.ndarray, times: np.ndarray, received: np.ndarray, codes: np.ndarray) -> None:
        if not len(ids):
            return
        if (self._n and ids[0] <= self._ids[self._n - 1]) or np.any(np.diff(ids) <= 0):
            raise ValueError("FilterColumns.add needs ids ascending and above every id held")
        n, m = self._n, len(ids)
        if n + m > len(self._ids):
            self._grow(max(2 * len(self._ids), n + m))
        self._ids[n : n + m] = ids
        self._times[n : n + m] = times
        self._received[n : n + m] = received
        self._cols[:, n : n + m] = codes
        self._alive[n : n + m] = True
        self._n = n + m  # readers see the new rows only once they are complete

    def remove(self, ids: Iterable[int]) -> None:
        """Mark ``ids`` deleted (absent ones are ignored)."""
        wanted = np.asarray(list(ids), dtype=np.int64)
        if not len(wanted):
            return
        with self._lock:
            held = self._ids[: self._n]
            pos = np.searchsorted(held, wanted)
            inside = pos < len(held)
            pos, wanted = pos[inside], wanted[inside]
            self._alive[pos[held[pos] == wanted]] = False

    def select(self, window: TimeWindow | None, filters: Filters) -> np.ndarray:
        """Ids (ascending int64) of live rows in ``window`` (half-open; with its ``future_skew``, rows dated
        more than that after their receipt are left out) matching ``filters``; values of one field are
        OR-ed, fields AND-ed. ``filters.trace_id`` must be empty (not kept here)."""
        if filters.trace_id:
            raise ValueError("FilterColumns does not hold trace ids: select trace filters in SQL")
        n = self._n
        mask = self._alive[:n].copy()
        if window is not None:
            times = self._times[:n]
            if window.since is not None:
                mask &= times >= float(window.since)
            if window.until is not None:
                mask &= times < float(window.until)
            if window.future_skew is not None:
                mask &= times - self._received[:n] <= float(window.future_skew)
        for row, values, codes in zip(range(3), (filters.event, filters.service, filters.from_handle),
                                      self._codes, strict=True):
            if values:
                column = self._cols[row, :n]
                match = np.zeros(n, dtype=bool)
                for code in codes.lookup(values):  # a few values: == beats np.isin (see the module docstring)
                    match |= column == code
                mask &= match
        return np.compress(mask, self._ids[:n])  # faster than boolean indexing (module docstring)

    def expired(self, cutoff: float, *, future_skew: float) -> np.ndarray:
        """Ids (ascending int64) of live rows older than ``cutoff`` (seconds since the epoch, UTC) for
        retention: by ``occurred_at``, or by ``received_at`` for rows dated more than ``future_skew``
        seconds after their receipt (a clock running ahead must not keep a report forever)."""
        n = self._n
        times, received = self._times[:n], self._received[:n]
        when = np.where(times - received > future_skew, received, times)
        return np.compress(self._alive[:n] & (when < cutoff), self._ids[:n])
