"""The procedural ledger (meshflow's ``record_outcome``) and the latest reports, read from the event store.

An outcome is an ordinary report, ``{"event": "outcome", "node_id": str, "success": bool, "confidence":
number?, "verifier_score": number?, ...}`` (what :meth:`memory_agent.client.MemoryClient.record_outcome`
sends), so it is stored, searched and forgotten like any event: the ledger is append-only because reports
are. :func:`outcome_stats` aggregates it per node in one SQL query (the ``(event, occurred_at)`` index) on
a read-only connection of its own, off the event loop; a report whose fields have other types still
counts, but only well-typed fields enter the rates and means.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_agent.shared.constants import OUTCOME_EVENT
from memory_agent.shared.requests import OutcomesRequest

__all__ = ["OutcomeStats", "outcome_stats"]

_NUMBER = "('integer', 'real')"
_SQL = f"""
SELECT json_extract(payload, '$.node_id') AS node,
       count(*),
       sum(json_type(payload, '$.success') = 'true'),
       sum(json_type(payload, '$.success') IN ('true', 'false')),
       avg(CASE WHEN json_type(payload, '$.confidence') IN {_NUMBER} THEN json_extract(payload, '$.confidence') END),
       avg(CASE WHEN json_type(payload, '$.verifier_score') IN {_NUMBER}
                THEN json_extract(payload, '$.verifier_score') END),
       min(occurred_at), max(occurred_at)
FROM events
WHERE event = ? AND occurred_at >= ? AND json_type(payload, '$.node_id') = 'text' {{node}}
GROUP BY node ORDER BY node
"""


@dataclass(frozen=True, slots=True)
class OutcomeStats:
    """One node's outcomes: ``count`` reports, ``successes`` of the ``judged`` ones with a boolean
    ``success``; ``success_rate`` = successes / judged (``None`` when none was judged); means over the
    reports that carry a number; times in seconds since the epoch, UTC."""

    node_id: str
    count: int
    successes: int
    judged: int
    success_rate: float | None
    mean_confidence: float | None
    mean_verifier_score: float | None
    first_at: float
    last_at: float

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "count": self.count, "successes": self.successes, "judged": self.judged,
                "success_rate": self.success_rate, "mean_confidence": self.mean_confidence,
                "mean_verifier_score": self.mean_verifier_score, "first_at": self.first_at, "last_at": self.last_at}


def _query(db_path: Path, request: OutcomesRequest) -> list[OutcomeStats]:
    conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True)
    try:
        params: list[Any] = [OUTCOME_EVENT, request.since if request.since is not None else float("-inf")]
        node = ""
        if request.node_id is not None:
            node = "AND json_extract(payload, '$.node_id') = ?"
            params.append(request.node_id)
        rows = conn.execute(_SQL.format(node=node), params).fetchall()
    finally:
        conn.close()
    out = []
    for node_id, count, successes, judged, confidence, verifier, first, last in rows:
        out.append(OutcomeStats(
            node_id=str(node_id), count=int(count), successes=int(successes or 0), judged=int(judged or 0),
            success_rate=round(successes / judged, 6) if judged else None,
            mean_confidence=None if confidence is None else round(float(confidence), 6),
            mean_verifier_score=None if verifier is None else round(float(verifier), 6),
            first_at=float(first), last_at=float(last)))
    return out


async def outcome_stats(db_path: Path, request: OutcomesRequest) -> list[OutcomeStats]:
    """Per-node outcome statistics since ``request.since`` (all time when ``None``), for one node or all,
    sorted by node id. Runs in a worker thread on its own read-only connection."""
    return await asyncio.to_thread(_query, db_path, request)
