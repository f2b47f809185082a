"""The event store: SQLite (WAL) is the source of truth for events, their text and their embeddings.

One :class:`EventStore` owns two aiosqlite connections, each with its own thread: the writer, and a
reader for everything else (questions, stats, the embedding backlog's reads), so a question never waits
behind a write: in WAL mode readers see the last commit while a write is under way. Every
write runs in :meth:`EventStore._transaction` (``BEGIN IMMEDIATE`` under an asyncio lock, one
transaction per ``insert``/``delete``/``update_vectors``), which also keeps the in-memory
:class:`~memory_agent.store.filter_columns.FilterColumns` in step from what the database itself recorded
(new ids above the columns' last one; deleted ids noted by a temporary trigger), so no write path can
leave them behind. Times are floats, seconds since the epoch, UTC; windows are half-open
``[since, until)``. Window and filters are always applied in SQL (:func:`memory_agent.store.sql.where_clause`)
or by the filter columns, which hold the same rows. Columns are named by :mod:`memory_agent.store.schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import aiosqlite
import numpy as np

from memory_agent.errors import InvalidArgument, StorageLost, StoreClosed, StoreError
from memory_agent.store.filter_columns import FILTER_FIELDS, FilterColumns
from memory_agent.store.lexical import LexicalHits, LexicalSearch
from memory_agent.store.schema import EVENT_FIELDS, SELECT_EVENT, decode_event, encode_event, migrate
from memory_agent.store.sql import IN_CHUNK, chunks, where_clause
from memory_agent.store.traces import TraceLookups
from memory_agent.store.vectors import EmbeddingRows, Ids, VectorModel, as_matrix
from memory_agent.types import Filters, InsertResult, NewEvent, StoredEvent, TimeWindow, Vocabulary

__all__ = ["DEFAULT_FTS_MAX_DOCS", "EventStore", "LexicalHits", "StoreStats"]

_SELECT_FILTER = ", ".join(FILTER_FIELDS)
# The most events one BM25 query ranks (``index.fts_max_docs``; see EventStore.fts_search).
DEFAULT_FTS_MAX_DOCS = 2000
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_FIELDS)}, embedding, embedding_model, embedding_dim) "
    f"VALUES ({', '.join(':' + f for f in EVENT_FIELDS)}, :embedding, :embedding_model, :embedding_dim)"
)
_INSERT_EVENT_WITH_ID = _INSERT_EVENT.replace("INSERT INTO events (", "INSERT INTO events (id, ").replace(
    "VALUES (", "VALUES (:id, ")
# Seconds a connection waits for a lock before SQLite says "database is locked".
_BUSY_TIMEOUT = 5.0
# Deleted ids are noted by the database itself (on this connection only), so every delete, whatever
# issues it, reaches the filter columns.
_NOTE_DELETES = (
    "CREATE TEMP TABLE IF NOT EXISTS deleted_events (id INTEGER PRIMARY KEY)",
    "CREATE TEMP TRIGGER IF NOT EXISTS note_deleted_event AFTER DELETE ON main.events "
    "BEGIN INSERT OR IGNORE INTO deleted_events (id) VALUES (old.id); END",
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Size and span of the store. Times are seconds since the epoch, UTC (``None`` when empty).

    ``db_bytes`` is the main database file, ``wal_bytes`` the write-ahead log next to it (bytes).
    """

    count: int
    max_id: int
    first_occurred_at: float | None
    last_occurred_at: float | None
    models: tuple[VectorModel, ...]
    db_bytes: int
    wal_bytes: int


def _read_columns(path: Path, up_to: int) -> FilterColumns:
    """The filter columns of rows ``id <= up_to``, read through a read-only connection (blocking)."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT {_SELECT_FILTER} FROM events WHERE +id <= ?", (up_to,)).fetchall()
    finally:
        conn.close()
    return FilterColumns.from_rows(rows)


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path``, ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino

class EventStore(EmbeddingRows, LexicalSearch, TraceLookups):
    """Events in SQLite, with FTS5 over their text and their embeddings as float32 BLOBs.

    Create with ``await EventStore.open(path)``; ``await close()`` when done (idempotent; a store left
    open warns with a ``ResourceWarning``). Raises ``StoreClosed`` when used after ``close()``.
    """

    def __init__(self, path: Path, conn: aiosqlite.Connection, *, reader: aiosqlite.Connection | None = None,
                 fts_max_docs: int = DEFAULT_FTS_MAX_DOCS) -> None:
        self.path = path
        self.fts_max_docs = fts_max_docs
        self._conn = conn
        self._reader = reader or conn
        self._identity = _identity(path)
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._columns: FilterColumns | None = None
        self._columns_task: asyncio.Task[None] | None = None
        self._deleted_while_loading: list[int] = []

    @classmethod
    async def open(
        cls, path: Path, *, fts_max_docs: int = DEFAULT_FTS_MAX_DOCS, filter_columns: bool = False,
        busy_timeout: float = _BUSY_TIMEOUT,
    ) -> EventStore:
        """Open (or create) the store at ``path``: creates parent dirs, WAL, runs pending migrations.

        ``fts_max_docs``: the most events a BM25 query ranks (see :meth:`fts_search`). ``filter_columns``:
        load :class:`~memory_agent.store.filter_columns.FilterColumns` in the background (its own
        read-only connection, about a second per million events), after which :meth:`count` and
        :meth:`candidate_ids` are answered from memory. ``busy_timeout``: seconds a statement waits for
        another process's lock before failing with "database is locked". Raises ``ConfigError`` when the
        file is not an SQLite database or is newer than this code.
        """
        path = Path(path)
        await asyncio.to_thread(migrate, path)
        conn = await aiosqlite.connect(path, isolation_level=None)
        reader: aiosqlite.Connection | None = None
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            for statement in _NOTE_DELETES:
                await conn.execute(statement)
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            await reader.execute("PRAGMA query_only=1")
        except BaseException:
            await conn.close()
            if reader is not None:
                await reader.close()
            raise
        store = cls(path, conn, reader=reader, fts_max_docs=fts_max_docs)
        if filter_columns:
            store._columns_task = asyncio.create_task(store._load_columns(), name="memory-filter-columns")
        return store

    async def _load_columns(self) -> None:
        started = time.perf_counter()
        head = (await self._fetchall("SELECT coalesce(max(id), 0) FROM events"))[0][0]
        columns = await asyncio.to_thread(_read_columns, self.path, head)
        async with self._write_lock:  # no insert or delete while the rows since ``head`` are added
            rows = await self._write_fetchall(
                f"SELECT {_SELECT_FILTER} FROM events WHERE id > ? ORDER BY id", (head,))
            columns.add(rows)
            columns.remove(self._deleted_while_loading)
            self._deleted_while_loading = []
            self._columns = columns
        log.info("filter columns of %d events loaded in %.1f s", len(columns), time.perf_counter() - started)

    async def columns_ready(self) -> bool:
        """Wait for the filter columns if they are loading; True when :meth:`candidate_ids` uses them."""
        if self._columns_task is not None:
            await asyncio.shield(self._columns_task)
        return self._columns is not None

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._columns_task is not None and not self._columns_task.done():
            self._columns_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._columns_task
        try:
            await self._conn.close()
        finally:
            if self._reader is not self._conn:
                await self._reader.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            _warn(f"EventStore {self.path} was never closed", ResourceWarning, stacklevel=1)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(str(self.path))

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read on the reader connection: it sees the last commit and never waits behind a write."""
        self._check_open()
        rows = await self._reader.execute_fetchall(sql, params)
        return list(rows)

    async def _write_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read on the writer connection: inside a transaction (it sees the transaction's own rows)."""
        self._check_open()
        rows = await self._conn.execute_fetchall(sql, params)
        return list(rows)

    def check_on_disk(self) -> None:
        """Raise ``StorageLost`` when the database file is no longer the one opened (deleted, or replaced:
        SQLite would go on writing into the unlinked file, and nothing of it would survive). A ``stat``."""
        now = _identity(self.path)
        if now is None:
            raise StorageLost(str(self.path), "the database file or its directory was deleted")
        if self._identity is not None and now != self._identity:
            raise StorageLost(str(self.path), "the database file was replaced by another file")

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The one way to write: ``BEGIN IMMEDIATE`` under the write lock, ``COMMIT`` (or ``ROLLBACK`` on
        any error), then the filter columns take the rows added above their last id and the ids the
        temporary trigger noted as deleted. After an error that SQLite already rolled back (a full
        disk does), the original error is raised, not "cannot rollback - no transaction is active"."""
        self._check_open()
        async with self._write_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                deleted = [int(r[0]) for r in await self._conn.execute_fetchall("SELECT id FROM temp.deleted_events")]
                if deleted:
                    await self._conn.execute("DELETE FROM temp.deleted_events")
                await self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    try:
                        await self._conn.execute("ROLLBACK")
                    except sqlite3.Error as exc:  # keep the error that made the transaction fail
                        log.debug("rollback after a failed transaction failed too: %s", exc)
                raise
            await self._sync_columns(deleted)

    async def _sync_columns(self, deleted: list[int]) -> None:
        """Bring the filter columns up to a commit (called under the write lock)."""
        columns = self._columns
        if columns is not None:
            added = await self._write_fetchall(
                f"SELECT {_SELECT_FILTER} FROM events WHERE id > ? ORDER BY id", (columns.max_id,)
            )
            columns.add(added)
            columns.remove(deleted)
        elif self._columns_task is not None and not self._columns_task.done():
            self._deleted_while_loading.extend(deleted)  # rows added meanwhile are read when loading ends

    # ---- writes -------------------------------------------------------------------------------------

    async def find_message(self, from_handle: str, message_id: str) -> int | None:
        """Id of the stored event that ``from_handle`` sent as ``message_id``, or ``None`` (lets a redelivery
        skip embedding). A message id is unique among one sender's messages (docs/mesh.md, "Exactly once"):
        another sender's message of the same id is another report."""
        rows = await self._fetchall("SELECT id FROM events WHERE message_id = ? AND from_handle = ?",
                                    (message_id, from_handle))
        return int(rows[0][0]) if rows else None

    async def insert(
        self, events: Sequence[NewEvent], vectors: np.ndarray | None = None, *, model: str | None = None,
        bulk: bool = False, ids: Sequence[int] | None = None,
    ) -> list[InsertResult]:
        """Store ``events`` in one transaction, with their embeddings ``vectors`` ((n, dim) float32) made
        by ``model``, or without (``None``: the rows join the embedding backlog,
        :mod:`memory_agent.backlog`); their FTS5 rows are committed with them.

        Returns one result per event, in order. A ``message_id`` its sender already stored (or repeated by
        the same sender earlier in the batch) yields ``InsertResult(existing_id, duplicate=True)`` and writes
        nothing; the same ``message_id`` from another sender is another event.
        ``bulk`` (for imports of thousands of rows): the FTS5 rows are written by one ``INSERT ... SELECT``
        after the events instead of by the per-row trigger, which is dropped and re-created inside the same
        transaction (no other connection ever sees it missing); docs/benchmarks.md#design-import.
        ``ids``: the events' ids, given instead of assigned (a cluster replica stores each event under its
        sequence in the events stream, :mod:`memory_agent.cluster`, so ids agree across replicas): one per
        event, strictly increasing and above every id ever stored (:meth:`last_id`).
        Raises ``InvalidArgument`` when ``vectors`` does not have one row per event or comes without
        ``model``, or when ``ids`` are not one per event, increasing and above :meth:`last_id`.
        """
        self._check_open()
        if not events:
            return []
        given = ids
        if given is not None and (len(given) != len(events) or any(b <= a for a, b in itertools.pairwise(given))):
            raise InvalidArgument("ids", "must be one per event, strictly increasing")
        matrix: np.ndarray | None = None
        dim: int | None = None
        if vectors is not None:
            if not model:
                raise InvalidArgument("model", "vectors need the name of the model that made them")
            matrix = as_matrix(vectors, len(events))
            dim = int(matrix.shape[1])
        async with self._transaction() as conn:
            found = await self._ids_of(list(dict.fromkeys(e.sent for e in events)))
            existing = set(found)
            if given is not None and given[0] <= await self._last_id():
                raise InvalidArgument("ids", f"must be above the last id stored, not from {given[0]}")
            new_rows: list[dict[str, Any]] = []
            planned: set[tuple[str, str]] = set()
            for i, event in enumerate(events):
                key = event.sent
                if key in existing or key in planned:
                    continue
                planned.add(key)
                row = encode_event(event)
                if given is not None:
                    row["id"] = int(given[i])
                if matrix is None:
                    row.update(embedding=None, embedding_model=None, embedding_dim=None)
                else:
                    row.update(embedding=matrix[i].tobytes(), embedding_model=model, embedding_dim=dim)
                new_rows.append(row)
            if new_rows:
                trigger = await self._drop_fts_trigger() if bulk else None
                first = (await self._write_fetchall("SELECT coalesce(max(id), 0) FROM events"))[0][0]
                await conn.executemany(_INSERT_EVENT if given is None else _INSERT_EVENT_WITH_ID, new_rows)
                if trigger is not None:
                    await conn.execute(
                        "INSERT INTO events_fts (rowid, text) SELECT id, text FROM events WHERE id > ?", (first,)
                    )
                    await conn.execute(trigger)
                # AUTOINCREMENT under the write lock: the new rows are exactly the ids above ``first``.
                rows = await self._write_fetchall(
                    "SELECT from_handle, message_id, id FROM events WHERE id > ?", (first,))
                found.update(((str(r[0]), str(r[1])), int(r[2])) for r in rows)
        results: list[InsertResult] = []
        first_seen: set[tuple[str, str]] = set()
        for event in events:
            key = event.sent
            duplicate = key in existing or key in first_seen
            first_seen.add(key)
            results.append(InsertResult(found[key], duplicate=duplicate))
        return results

    async def last_id(self) -> int:
        """The largest id ever stored, deleted or not (SQLite's AUTOINCREMENT counter; 0 for a new store): a
        cluster replica has applied the events stream up to this sequence, at least."""
        self._check_open()
        rows = await self._fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    async def last_received_at(self) -> float | None:
        """Receipt time of the stored event with the largest id (seconds since the epoch, UTC; None when empty)."""
        rows = await self._fetchall("SELECT received_at FROM events ORDER BY id DESC LIMIT 1")
        return float(rows[0][0]) if rows else None

    async def _last_id(self) -> int:
        rows = await self._write_fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    async def _drop_fts_trigger(self) -> str:
        """Drop the FTS5 insert trigger (inside the caller's transaction); returns its SQL to re-create it."""
        rows = await self._write_fetchall(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'events_fts_ai'")
        if not rows:
            raise StoreError(f"store {self.path}: the FTS5 trigger events_fts_ai is missing", path=str(self.path))
        await self._conn.execute("DROP TRIGGER events_fts_ai")
        return str(rows[0][0])

    async def find_messages(self, sent: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """``(from_handle, message_id) -> id`` for those of ``sent`` already stored (one query per 500)."""
        self._check_open()
        return await self._ids_of(sent, conn=self._reader)

    async def _ids_of(self, sent: Sequence[tuple[str, str]], *,
                      conn: aiosqlite.Connection | None = None) -> dict[tuple[str, str], int]:
        """``(from_handle, message_id) -> id`` of the stored ones among ``sent`` (by default on the writer,
        inside the caller's transaction). Seeks the unique index on ``(message_id, from_handle)``."""
        wanted = set(sent)
        ids: dict[tuple[str, str], int] = {}
        message_ids = list(dict.fromkeys(mid for _, mid in sent))
        for part in range(0, len(message_ids), IN_CHUNK):
            chunk = message_ids[part : part + IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = await (conn or self._conn).execute_fetchall(
                f"SELECT from_handle, message_id, id FROM events WHERE message_id IN ({marks})", chunk
            )
            ids.update(((str(r[0]), str(r[1])), int(r[2])) for r in rows if (str(r[0]), str(r[1])) in wanted)
        return ids

    async def delete(self, ids: Ids) -> int:
        """Delete events (and their FTS rows) by id in one transaction; returns how many were deleted."""
        self._check_open()
        if len(ids) == 0:
            return 0
        deleted = 0
        async with self._transaction() as conn:
            for chunk in chunks(ids):
                marks = ", ".join("?" for _ in chunk)
                cursor = await conn.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
                deleted += max(cursor.rowcount, 0)
                await cursor.close()
        return deleted

    # ---- reads --------------------------------------------------------------------------------------

    async def get(self, ids: Ids) -> list[StoredEvent]:
        """Events by id, in the order given; ids not stored are skipped."""
        found: dict[int, StoredEvent] = {}
        for chunk in chunks(ids):
            marks = ", ".join("?" for _ in chunk)
            rows = await self._fetchall(f"SELECT {SELECT_EVENT} FROM events WHERE id IN ({marks})", chunk)
            for row in rows:
                event = decode_event(row)
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
            raise InvalidArgument("order", f"must be 'asc' or 'desc', not {order!r}")
        where, params = where_clause(window, filters)
        direction = "ASC" if order == "asc" else "DESC"
        sql = f"SELECT {SELECT_EVENT} FROM events WHERE {where} ORDER BY occurred_at {direction}, id {direction}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(int(limit), 0))
        return [decode_event(row) for row in await self._fetchall(sql, params)]

    async def count(self, window: TimeWindow | None, filters: Filters) -> int:
        """Number of events in ``window`` matching ``filters`` (from the filter columns when loaded)."""
        columns = self._columns
        if columns is not None and not filters.trace_id:
            if window is None and filters.is_empty():
                return len(columns)
            return len(await asyncio.to_thread(columns.select, window, filters))
        where, params = where_clause(window, filters)
        rows = await self._fetchall(f"SELECT count(*) FROM events WHERE {where}", params)
        return int(rows[0][0])

    async def daily_counts(self, window: TimeWindow | None, filters: Filters) -> list[tuple[str, int, int]]:
        """``(event, day, count)`` for the events in ``window`` matching ``filters``, by day then event;
        ``day``: whole days since the epoch, UTC (``occurred_at // 86400``)."""
        where, params = where_clause(window, filters)
        rows = await self._fetchall(
            f"SELECT event, CAST(occurred_at / 86400 AS INTEGER) AS day, count(*) FROM events WHERE {where} "
            "GROUP BY day, event ORDER BY day, event", params)
        return [(str(event), int(day), int(n)) for event, day, n in rows]

    async def count_unembedded(self, window: TimeWindow | None, filters: Filters) -> int:
        """Events in ``window`` matching ``filters`` that wait for a vector (found by filters and words only
        until then). A cost in proportion to the embedding backlog, not to the store."""
        where, params = where_clause(window, filters)
        return await self._count_backlog(where, params)

    async def candidate_ids(self, window: TimeWindow | None, filters: Filters) -> np.ndarray | None:
        """Ids (int64, ascending) of events in ``window`` matching ``filters``.

        ``None`` when there is no window and no filter, meaning "no restriction" (not "nothing").
        """
        if window is None and filters.is_empty():
            return None
        columns = self._columns
        if columns is not None and not filters.trace_id:
            return await asyncio.to_thread(columns.select, window, filters)
        where, params = where_clause(window, filters)
        rows = await self._fetchall(f"SELECT id FROM events WHERE {where} ORDER BY id", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    async def expired_ids(self, cutoff: float, *, future_skew: float) -> np.ndarray:
        """Ids (int64, ascending) retention deletes: ``occurred_at`` before ``cutoff`` (seconds since the
        epoch, UTC), or, for events dated more than ``future_skew`` seconds after their receipt, their
        ``received_at`` before it (see :meth:`FilterColumns.expired`)."""
        columns = self._columns
        if columns is not None:
            return await asyncio.to_thread(columns.expired, cutoff, future_skew=future_skew)
        rows = await self._fetchall(
            "SELECT id FROM events WHERE (occurred_at < ? AND occurred_at - received_at <= ?) "
            "OR (occurred_at - received_at > ? AND received_at < ?) ORDER BY id",
            (cutoff, future_skew, future_skew, cutoff),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    async def _event_count(self) -> int:
        """Events stored (from the filter columns when loaded, else SQLite)."""
        columns = self._columns
        if columns is not None:
            return len(columns)
        return int((await self._fetchall("SELECT count(*) FROM events"))[0][0])

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
        """Distinct event names, services and sender handles stored.

        Each column is read by a loose index scan (one ``min(col) WHERE col > previous`` seek per distinct
        value, in the index that leads with that column), so the cost grows with the number of distinct
        values, not of events: a million events with a few hundred names load in milliseconds.
        """
        return Vocabulary(
            events=frozenset(await self._distinct("event")),
            services=frozenset(await self._distinct("service")),
            handles=frozenset(await self._distinct("from_handle")),
        )

    async def _distinct(self, column: Literal["event", "service", "from_handle"]) -> list[str]:
        # The "loose index scan" of https://sqlite.org/lang_with.html (recursive CTE); NULLs are skipped.
        rows = await self._fetchall(
            f"WITH RECURSIVE v(x) AS (SELECT min({column}) FROM events UNION ALL "
            f"SELECT (SELECT min({column}) FROM events WHERE {column} > v.x) FROM v WHERE v.x IS NOT NULL) "
            "SELECT x FROM v WHERE x IS NOT NULL"
        )
        return [str(r[0]) for r in rows]

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
