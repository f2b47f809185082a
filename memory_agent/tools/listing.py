"""``memory-agent events``: list what is stored (a time window and filters), without exporting it.

It reads the SQLite file read-only, like ``export`` (a consistent snapshot, safe while the daemon runs),
with the same ``WHERE`` builder as every query (:func:`memory_agent.store.sql.where_clause`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_agent.errors import SnapshotError
from memory_agent.query.text import clip
from memory_agent.store.schema import SELECT_EVENT, decode_event
from memory_agent.store.sql import where_clause
from memory_agent.types import Filters, StoredEvent, TimeWindow
from memory_agent.wire import iso_utc

__all__ = ["Listing", "event_line", "list_events", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_SHOWN = frozenset({"event", "trace_id", "occurred_at"})


@dataclass(frozen=True, slots=True)
class Listing:
    """The events listed (newest first unless asked otherwise) and how many match in all."""

    events: list[StoredEvent]
    total: int


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"2w"`` in seconds; raises ``ValueError`` saying the form."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"{text[:40]!r} is not a duration: write a number and a unit, e.g. 30m, 24h, 7d or 2w")
    return float(found.group(1)) * _UNIT[found.group(2)]


def list_events(db_path: Path, *, window: TimeWindow | None, filters: Filters, limit: int,
                oldest_first: bool = False) -> Listing:
    """Up to ``limit`` events in ``window`` matching ``filters``, by ``occurred_at`` (newest first unless
    ``oldest_first``), and the number that match. Blocking (sqlite3, read-only). Raises ``SnapshotError``
    when there is no store at ``db_path`` or it is not a memory-agent store."""
    if not Path(db_path).is_file():
        raise SnapshotError(f"no store at {db_path}: pass the --data-dir the daemon uses")
    where, params = where_clause(window, filters)
    direction = "ASC" if oldest_first else "DESC"
    conn = sqlite3.connect(f"file:{Path(db_path).resolve()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        total = int(conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()[0])
        rows = conn.execute(
            f"SELECT {SELECT_EVENT} FROM events WHERE {where} ORDER BY occurred_at {direction}, id {direction} "
            "LIMIT ?", [*params, max(limit, 0)]).fetchall()
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise SnapshotError(f"{db_path} is not a memory-agent store ({exc})") from exc
    finally:
        conn.close()
    return Listing(events=[decode_event(row) for row in rows], total=total)


def event_line(event: StoredEvent, *, width: int = 160) -> str:
    """``#12  2026-11-20T14:05:00Z  @deploy  rollback  trace t-81  service=api-gateway reason=...`` (the
    payload's other fields, clipped to ``width`` characters in all)."""
    fields: dict[str, Any] = {k: v for k, v in event.payload.items() if k not in _SHOWN and v is not None}
    detail = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in fields.items())
    head = f"#{event.id}  {iso_utc(event.occurred_at)}  @{event.from_handle}  {event.event}  trace {event.trace_id}"
    return clip(f"{head}  {detail}" if detail else head, max(width, len(head)))
