"""The event store: SQLite (WAL) is the source of truth for events, their text and their embeddings.

One :class:`EventStore` owns one aiosqlite connection (a single thread does the blocking work).
Writes are serialised by an asyncio lock and each ``insert``/``delete``/``update_vectors`` is one
transaction. Times are floats, seconds since the epoch, UTC; windows are half-open ``[since, until)``.
Window and filters are always applied in SQL (see :func:`where_clause`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import aiosqlite
import numpy as np

from memory_agent.errors import MemoryAgentError
from memory_agent.models import Filters, InsertResult, NewEvent, StoredEvent, TimeWindow, Vocabulary
from memory_agent.schema import migrate

__all__ = [
    "EventStore",
    "StoreStats",
    "VectorModel",
    "VectorSummary",
    "fts_query",
    "where_clause",
]

_EVENT_COLUMNS = (
    "id, message_id, session, from_handle, trace_id, event, service, occurred_at, received_at, payload, text"
)
# Ids per statement for ``IN (...)`` lists; well below SQLITE_MAX_VARIABLE_NUMBER.
_CHUNK = 500
_MAX_QUERY_TERMS = 32

Ids = Sequence[int] | np.ndarray
"""Event ids: a sequence of ints or an int64 array."""

# Common English words that carry no meaning for search; dropped from FTS5 queries.
_STOPWORDS_TEXT = """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class VectorModel:
    """How many stored rows carry embeddings of one model (``dim`` floats each)."""

    model: str
    dim: int
    count: int


@dataclass(frozen=True, slots=True)
class VectorSummary:
    """What an index built from this store must agree with: row count, max id, sum of ids, models."""

    count: int
    max_id: int
    id_sum: int
    models: tuple[VectorModel, ...]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Size and span of the store. Times are seconds since the epoch, UTC (``None`` when empty).

    ``db_bytes`` is the main database file, ``wal_bytes`` the write-ahead log next to it.
    """

    count: int
    max_id: int
    first_occurred_at: float | None
    last_occurred_at: float | None
    models: tuple[VectorModel, ...]
    db_bytes: int
    wal_bytes: int


def fts_query(text: str) -> str | None:
    """Turn free user text into a safe FTS5 query, or ``None`` when nothing searchable is left.

    Each whitespace-separated chunk becomes one quoted phrase of its word pieces (``api-gateway`` ->
    ``"api gateway"``); English stopwords are dropped; phrases are OR-ed. Only letters and digits reach
    FTS5, inside double quotes, so FTS5 syntax in a question (``AND OR NEAR( * ^ "``) cannot raise.
    """
    phrases: list[str] = []
    seen: set[str] = set()
    for chunk in text.lower().split():
        pieces = _WORD.findall(chunk)
        if not pieces or all(piece in STOPWORDS for piece in pieces):
            continue
        phrase = pieces[0] if len(pieces) == 1 else " ".join(pieces)
        if phrase not in seen:
            seen.add(phrase)
            phrases.append(f'"{phrase}"')
        if len(phrases) >= _MAX_QUERY_TERMS:
            break
    return " OR ".join(phrases) if phrases else None


def where_clause(window: TimeWindow | None, filters: Filters, *, alias: str = "") -> tuple[str, list[Any]]:
    """SQL conditions (joined with AND, ``"1"`` when none) and their parameters for a window + filters.

    The window is half-open (``since <= occurred_at < until``); values within one filter field are OR-ed.
    """
    prefix = f"{alias}." if alias else ""
    conditions: list[str] = []
    params: list[Any] = []
    if window is not None:
        if window.since is not None:
            conditions.append(f"{prefix}occurred_at >= ?")
            params.append(float(window.since))
        if window.until is not None:
            conditions.append(f"{prefix}occurred_at < ?")
            params.append(float(window.until))
    for column, values in (
        ("event", filters.event),
        ("service", filters.service),
        ("from_handle", filters.from_handle),
        ("trace_id", filters.trace_id),
    ):
        if values:
            marks = ", ".join("?" for _ in values)
            conditions.append(f"{prefix}{column} IN ({marks})")
            params.extend(values)
    return (" AND ".join(conditions) if conditions else "1"), params


def _chunks(ids: Ids) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield [int(i) for i in ids[start : start + _CHUNK]]


def _row_to_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        id=int(row[0]),
        message_id=row[1],
        session=row[2],
        from_handle=row[3],
        trace_id=row[4],
        event=row[5],
        service=row[6],
        occurred_at=float(row[7]),
        received_at=float(row[8]),
        payload=json.loads(row[9]),
        text=row[10],
    )


def _as_matrix(vectors: np.ndarray, n: int) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise ValueError(f"vectors must have shape ({n}, dim), got {matrix.shape}")
    return matrix


class EventStore:
    """Events in SQLite, with FTS5 over their text and their embeddings as float32 BLOBs.

    Create with ``await EventStore.open(path)``; ``await close()`` when done (idempotent).
    """

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> EventStore:
        """Open (or create) the store at ``path``: creates parent dirs, WAL, runs pending migrations.

        Raises ``ConfigError`` when the file is not an SQLite database or is newer than this code.
        """
        path = Path(path)
        await asyncio.to_thread(migrate, path)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            await conn.close()
            raise
        return cls(path, conn)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryAgentError(f"event store {self.path} is closed")

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._check_open()
        rows = await self._conn.execute_fetchall(sql, params)
        return list(rows)

    # ---- writes -------------------------------------------------------------------------------------

    async def find_message(self, message_id: str) -> int | None:
        """Id of the stored event with this ``message_id``, or ``None`` (lets a redelivery skip embedding)."""
        rows = await self._fetchall("SELECT id FROM events WHERE message_id = ?", (message_id,))
        return int(rows[0][0]) if rows else None

    async def insert(
        self, events: Sequence[NewEvent], vectors: np.ndarray, *, model: str
    ) -> list[InsertResult]:
        """Store ``events`` with their embeddings ``vectors`` ((n, dim) float32) in one transaction.

        Returns one result per event, in order. A ``message_id`` already stored (or repeated earlier in
        the same batch) yields ``InsertResult(existing_id, duplicate=True)`` and writes nothing.
        Raises ``ValueError`` when ``vectors`` does not have one row per event.
        """
        self._check_open()
        if not events:
            return []
        matrix = _as_matrix(vectors, len(events))
        dim = int(matrix.shape[1])
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                ids = await self._ids_of(list(dict.fromkeys(e.message_id for e in events)))
                existing = set(ids)
                new_rows: list[tuple[Any, ...]] = []
                planned: set[str] = set()
                for event, vector in zip(events, matrix, strict=True):
                    if event.message_id in existing or event.message_id in planned:
                        continue
                    planned.add(event.message_id)
                    new_rows.append(
                        (
                            event.message_id,
                            event.session,
                            event.from_handle,
                            event.trace_id,
                            event.event,
                            event.service,
                            float(event.occurred_at),
                            float(event.received_at),
                            json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False),
                            event.text,
                            vector.tobytes(),
                            model,
                            dim,
                        )
                    )
                if new_rows:
                    await self._conn.executemany(
                        "INSERT INTO events (message_id, session, from_handle, trace_id, event, service, "
                        "occurred_at, received_at, payload, text, embedding, embedding_model, embedding_dim) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        new_rows,
                    )
                    ids.update(await self._ids_of([row[0] for row in new_rows]))
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
        results: list[InsertResult] = []
        first_seen: set[str] = set()
        for event in events:
            mid = event.message_id
            duplicate = mid in existing or mid in first_seen
            first_seen.add(mid)
            results.append(InsertResult(ids[mid], duplicate=duplicate))
        return results

    async def find_messages(self, message_ids: Sequence[str]) -> dict[str, int]:
        """``message_id -> id`` for those of ``message_ids`` already stored (one query per 500 ids)."""
        self._check_open()
        return await self._ids_of(message_ids)

    async def _ids_of(self, message_ids: Sequence[str]) -> dict[str, int]:
        """``message_id -> id`` of the stored ones among ``message_ids`` (inside the caller's transaction)."""
        ids: dict[str, int] = {}
        for part in range(0, len(message_ids), _CHUNK):
            chunk = list(message_ids[part : part + _CHUNK])
            marks = ", ".join("?" for _ in chunk)
            rows = await self._conn.execute_fetchall(
                f"SELECT message_id, id FROM events WHERE message_id IN ({marks})", chunk
            )
            ids.update((str(r[0]), int(r[1])) for r in rows)
        return ids

    async def update_vectors(self, ids: Ids, vectors: np.ndarray, *, model: str) -> int:
        """Replace the embeddings of ``ids`` with ``vectors`` ((n, dim) float32) made by ``model``.

        One transaction; used by reindexing after a model change. Returns the number of rows updated
        (missing ids are skipped).
        """
        self._check_open()
        if len(ids) == 0:
            return 0
        matrix = _as_matrix(vectors, len(ids))
        dim = int(matrix.shape[1])
        rows = [(vec.tobytes(), model, dim, int(i)) for i, vec in zip(ids, matrix, strict=True)]
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                before = self._conn.total_changes
                await self._conn.executemany(
                    "UPDATE events SET embedding = ?, embedding_model = ?, embedding_dim = ? WHERE id = ?",
                    rows,
                )
                changed = self._conn.total_changes - before
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
        return changed

    async def delete(self, ids: Ids) -> int:
        """Delete events (and their FTS rows) by id in one transaction; returns how many were deleted."""
        self._check_open()
        if len(ids) == 0:
            return 0
        deleted = 0
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                for chunk in _chunks(ids):
                    marks = ", ".join("?" for _ in chunk)
                    cursor = await self._conn.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
                    deleted += max(cursor.rowcount, 0)
                    await cursor.close()
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
        return deleted

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, ids: Ids) -> list[StoredEvent]:
        """Events by id, in the order given; ids not stored are skipped."""
        found: dict[int, StoredEvent] = {}
        for chunk in _chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            rows = await self._fetchall(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ({marks})", chunk)
            for row in rows:
                event = _row_to_event(row)
                found[event.id] = event
        return [found[int(i)] for i in ids if int(i) in found]

    async def select(
        self,
        window: TimeWindow | None,
        filters: Filters,
        *,
        limit: int | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[StoredEvent]:
        """Every event in ``window`` matching ``filters``, by ``occurred_at`` (then id), at most ``limit``."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        where, params = where_clause(window, filters)
        direction = "ASC" if order == "asc" else "DESC"
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY occurred_at {direction}, id {direction}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(int(limit), 0))
        return [_row_to_event(row) for row in await self._fetchall(sql, params)]

    async def count(self, window: TimeWindow | None, filters: Filters) -> int:
        """Number of events in ``window`` matching ``filters``."""
        where, params = where_clause(window, filters)
        rows = await self._fetchall(f"SELECT count(*) FROM events WHERE {where}", params)
        return int(rows[0][0])

    async def candidate_ids(self, window: TimeWindow | None, filters: Filters) -> np.ndarray | None:
        """Ids (int64, ascending) of events in ``window`` matching ``filters``.

        ``None`` when there is no window and no filter, meaning "no restriction" (not "nothing").
        """
        if window is None and filters.is_empty():
            return None
        where, params = where_clause(window, filters)
        rows = await self._fetchall(f"SELECT id FROM events WHERE {where} ORDER BY id", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    async def fts_search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int
    ) -> list[tuple[int, float]]:
        """Full-text search: ``(id, score)`` best first, score = ``-bm25()`` (higher is better).

        ``text`` is free user text (see :func:`fts_query`); window and filters are applied in the same
        SQL. Returns ``[]`` when the text has no searchable word or ``limit`` <= 0.
        """
        query = fts_query(text)
        if query is None or limit <= 0:
            return []
        where, params = where_clause(window, filters, alias="e")
        sql = (
            "SELECT e.id, bm25(events_fts) AS rank FROM events_fts "
            "JOIN events AS e ON e.id = events_fts.rowid "
            f"WHERE events_fts MATCH ? AND {where} ORDER BY rank, e.id LIMIT ?"
        )
        rows = await self._fetchall(sql, [query, *params, int(limit)])
        return [(int(r[0]), -float(r[1])) for r in rows]

    async def iter_vectors(
        self, *, batch: int = 10000, model: str | None = None
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        """Stored embeddings in id order, ``batch`` rows at a time: ``(ids (n,) int64, vectors (n, dim) float32)``.

        Only rows of ``model`` when given. Used to rebuild the vector index without re-embedding.
        Raises ``MemoryAgentError`` when one batch mixes dimensions (stored by different models).
        """
        last = 0
        model_sql = " AND embedding_model = ?" if model is not None else ""
        while True:
            params: list[Any] = [last]
            if model is not None:
                params.append(model)
            params.append(int(batch))
            rows = await self._fetchall(
                f"SELECT id, embedding, embedding_dim FROM events WHERE id > ?{model_sql} ORDER BY id LIMIT ?",
                params,
            )
            if not rows:
                return
            dims = {int(r[2]) for r in rows}
            if len(dims) != 1:
                raise MemoryAgentError(
                    f"store {self.path}: embeddings of dimensions {sorted(dims)} between ids "
                    f"{rows[0][0]} and {rows[-1][0]}; reindex the store"
                )
            dim = dims.pop()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
            yield ids, vectors.astype(np.float32, copy=False)
            last = int(ids[-1])

    async def iter_texts(self, *, batch: int = 1000) -> AsyncIterator[tuple[np.ndarray, list[str]]]:
        """Indexed texts in id order, ``batch`` rows at a time: ``(ids (n,) int64, texts)``; for reindexing.

        Pages by id, so rows may be updated (``update_vectors``) between batches.
        """
        last = 0
        while True:
            rows = await self._fetchall(
                "SELECT id, text FROM events WHERE id > ? ORDER BY id LIMIT ?", (last, int(batch))
            )
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, [str(r[1]) for r in rows]
            last = int(ids[-1])

    async def vocabulary(self) -> Vocabulary:
        """Distinct event names, services and sender handles stored."""
        events = await self._fetchall("SELECT DISTINCT event FROM events")
        services = await self._fetchall("SELECT DISTINCT service FROM events WHERE service IS NOT NULL")
        handles = await self._fetchall("SELECT DISTINCT from_handle FROM events")
        return Vocabulary(
            events=frozenset(r[0] for r in events),
            services=frozenset(r[0] for r in services),
            handles=frozenset(r[0] for r in handles),
        )

    async def vector_models(self) -> tuple[VectorModel, ...]:
        """The embedding models of stored rows, most rows first."""
        rows = await self._fetchall(
            "SELECT embedding_model, embedding_dim, count(*) FROM events "
            "GROUP BY embedding_model, embedding_dim ORDER BY count(*) DESC, embedding_model"
        )
        return tuple(VectorModel(str(r[0]), int(r[1]), int(r[2])) for r in rows)

    async def vector_summary(self) -> VectorSummary:
        """Count, max id and sum of ids of all rows, plus their models: what a saved index must match."""
        rows = await self._fetchall("SELECT count(*), coalesce(max(id), 0), coalesce(sum(id), 0) FROM events")
        count, max_id, id_sum = (int(v) for v in rows[0])
        return VectorSummary(count, max_id, id_sum, await self.vector_models())

    async def stats(self) -> StoreStats:
        """Row count, max id, first/last ``occurred_at``, models of stored vectors, file sizes in bytes."""
        rows = await self._fetchall(
            "SELECT count(*), coalesce(max(id), 0), min(occurred_at), max(occurred_at) FROM events"
        )
        count, max_id, first, last = rows[0]
        wal = self.path.with_name(self.path.name + "-wal")
        return StoreStats(
            count=int(count),
            max_id=int(max_id),
            first_occurred_at=None if first is None else float(first),
            last_occurred_at=None if last is None else float(last),
            models=await self.vector_models(),
            db_bytes=self.path.stat().st_size if self.path.exists() else 0,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
        )
