"""Lookups by trace id: is a question's token a stored trace id, which stored ids look like one that is
not, and the reports next to an event on its trace.

:class:`TraceLookups` is the part of :class:`memory_agent.store.EventStore` that reads the
``(trace_id, occurred_at)`` index; every lookup is an index seek or a short range scan, so its cost does
not grow with the number of traces, and no list of trace ids is held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memory_agent.errors import InvalidArgument
from memory_agent.store.sql import IN_CHUNK, chunks
from memory_agent.store.vectors import Ids

__all__ = ["TraceLookups"]




class TraceLookups:
    """Trace-id lookups; mixed into :class:`memory_agent.store.EventStore`."""

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def trace_neighbours(self, ids: Ids, *, width: int) -> dict[int, list[tuple[int, int]]]:
        """For each of ``ids``, the events up to ``width`` places before and after it on its trace.

        Order on a trace is ``(occurred_at, id)``. Returns ``{id: [(neighbour id, distance), ...]}`` with
        distance 1 for adjacent events, nearest first, before-side first at equal distance; ids not
        stored are left out. Each lookup is an index seek on ``(trace_id, occurred_at)`` (used by
        retrieval's local context, :mod:`memory_agent.query.retrieval`). Raises ``InvalidArgument`` if ``width`` < 0.
        """
        if width < 0:
            raise InvalidArgument("width", f"must be >= 0, not {width}")
        out: dict[int, list[tuple[int, int]]] = {}
        if width == 0 or len(ids) == 0:
            return out
        columns: list[str] = []
        for offset in range(width):
            columns.append(
                "(SELECT p.id FROM events AS p WHERE p.trace_id = e.trace_id "
                "AND (p.occurred_at, p.id) < (e.occurred_at, e.id) "
                f"ORDER BY p.occurred_at DESC, p.id DESC LIMIT 1 OFFSET {offset})"
            )
            columns.append(
                "(SELECT n.id FROM events AS n WHERE n.trace_id = e.trace_id "
                "AND (n.occurred_at, n.id) > (e.occurred_at, e.id) "
                f"ORDER BY n.occurred_at, n.id LIMIT 1 OFFSET {offset})"
            )
        select = ", ".join(columns)
        for chunk in chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            rows = await self._fetchall(f"SELECT e.id, {select} FROM events AS e WHERE e.id IN ({marks})", chunk)
            for row in rows:
                out[int(row[0])] = [
                    (int(found), 1 + k // 2) for k, found in enumerate(row[1:]) if found is not None
                ]
        return out

    async def known_traces(self, candidates: Sequence[str]) -> dict[str, str]:
        """Which of ``candidates`` are stored trace ids: ``{candidate: trace_id}`` (equal strings).

        One ``IN`` query over the ``(trace_id, occurred_at)`` index: an index seek per candidate, so the
        cost does not grow with the number of stored traces, and no list of trace ids is kept in memory.
        """
        wanted = list(dict.fromkeys(c for c in candidates if c))[:IN_CHUNK]
        if not wanted:
            return {}
        marks = ", ".join("?" for _ in wanted)
        rows = await self._fetchall(f"SELECT DISTINCT trace_id FROM events WHERE trace_id IN ({marks})", wanted)
        return {str(r[0]): str(r[0]) for r in rows}

    async def near_traces(self, trace_id: str, *, limit: int = 3) -> list[str]:
        """Stored trace ids that look like ``trace_id`` (for "no reports carry trace X; did you mean ..."):
        the same id in another letter case, else those sharing its longest prefix of at least half its
        length (and 3 characters). Each probe is a range seek on the trace index; at most ``limit`` ids."""
        if not trace_id or limit <= 0:
            return []
        found: list[str] = []
        for form in dict.fromkeys((trace_id.lower(), trace_id.upper())):
            if form != trace_id:
                found += (await self.known_traces([form])).keys()
        if found:
            return found[:limit]
        shortest = max(3, (len(trace_id) + 1) // 2)
        for end in range(len(trace_id) - 1, shortest - 1, -1):
            prefix = trace_id[:end]
            rows = await self._fetchall(
                "SELECT DISTINCT trace_id FROM events WHERE trace_id >= ? AND trace_id < ? ORDER BY trace_id LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            )
            if rows:
                return [str(r[0]) for r in rows]
        return []
