"""Embeddings as stored in the events table: float32 BLOBs with their model name and dimension.

:class:`EmbeddingRows` is the part of :class:`memory_agent.store.EventStore` that reads and replaces
embeddings (rebuilding the FAISS index, exact re-scoring, reindexing) and serves the embedding backlog
(:mod:`memory_agent.backlog`); it runs on the store's connections and write lock.

A row is stored without a vector (the three embedding columns NULL) and gets one behind ingest, once;
``embedding_model IS NOT NULL`` (:data:`HAS_VECTOR`) is the one test of "has a vector". A row the model
cannot embed keeps NULL columns and a reason in ``embedding_error``; the backlog is the rows with
neither (:data:`IN_BACKLOG`, served by the partial index ``events_backlog``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np

from memory_agent.errors import InvalidArgument, StoreError

__all__ = ["HAS_VECTOR", "IN_BACKLOG", "Backlog", "EmbeddingRows", "Ids", "VectorModel", "VectorSummary", "as_matrix"]

Ids = Sequence[int] | np.ndarray
"""Event ids: a sequence of ints or an int64 array."""

# Ids per statement when reading embeddings by id (SQLite >= 3.32 allows 32766 parameters).
_VECTOR_CHUNK = 8192

#: SQL: the row has a vector.
HAS_VECTOR = "embedding_model IS NOT NULL"
#: SQL: the row waits for a vector (the partial index ``events_backlog`` holds exactly these rows).
IN_BACKLOG = "embedding_model IS NULL AND embedding_error IS NULL"
_BACKLOG_FROM = f"events INDEXED BY events_backlog WHERE {IN_BACKLOG}"


@dataclass(frozen=True, slots=True)
class Backlog:
    """Rows without a vector: ``count`` waiting in the backlog, the ``oldest`` one's id and receipt time
    (seconds since the epoch, UTC; ``None`` when none waits), and ``failed`` rows the model could not embed."""

    count: int
    oldest_id: int | None
    oldest_received_at: float | None
    failed: int


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


def as_matrix(vectors: np.ndarray, n: int) -> np.ndarray:
    """``vectors`` as a C-contiguous little-endian float32 ``(n, dim)`` matrix; raises ``InvalidArgument`` otherwise."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise InvalidArgument("vectors", f"must have shape ({n}, dim), not {matrix.shape}")
    return matrix


class EmbeddingRows:
    """Reads and replaces stored embeddings; mixed into :class:`memory_agent.store.EventStore`."""

    path: Path
    _conn: aiosqlite.Connection

    def _check_open(self) -> None:
        raise NotImplementedError

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _write_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _decode(self, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(id, embedding BLOB, dim)`` rows as ``(ids (n,) int64, vectors (n, dim) float32)``.

        Raises ``StoreError`` when the rows hold embeddings of different dimensions.
        """
        dims = {int(r[2]) for r in rows}
        if len(dims) != 1:
            raise StoreError(
                f"store {self.path}: embeddings of dimensions {sorted(dims)} between ids "
                f"{rows[0][0]} and {rows[-1][0]}; reindex the store",
                path=str(self.path),
            )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dims.pop())
        return ids, vectors.astype(np.float32, copy=False)

    async def update_vectors(self, ids: Ids, vectors: np.ndarray, *, model: str) -> int:
        """Replace the embeddings of ``ids`` with ``vectors`` ((n, dim) float32) made by ``model``.

        One transaction; used by reindexing after a model change (a row the model could not embed
        before is cleared of its ``embedding_error``). Returns the number of rows updated (missing ids
        are skipped).
        """
        self._check_open()
        if len(ids) == 0:
            return 0
        matrix = as_matrix(vectors, len(ids))
        dim = int(matrix.shape[1])
        rows = [(vec.tobytes(), model, dim, int(i)) for i, vec in zip(ids, matrix, strict=True)]
        async with self._transaction() as conn:
            before = conn.total_changes
            await conn.executemany(
                "UPDATE events SET embedding = ?, embedding_model = ?, embedding_dim = ?, embedding_error = NULL "
                "WHERE id = ?", rows
            )
            changed = conn.total_changes - before
        return changed

    # ---- the embedding backlog ------------------------------------------------------------------------

    async def unembedded(self, *, after: int = 0, limit: int = 256) -> tuple[np.ndarray, list[str], float | None]:
        """The next ``limit`` rows of the backlog with ``id > after``, in id order: ``(ids (n,) int64,
        indexed texts, receipt time of the first (seconds since the epoch, UTC; None when none))``.
        Reads the partial index ``events_backlog`` (cost: the rows returned)."""
        rows = await self._fetchall(
            f"SELECT id, text, received_at FROM {_BACKLOG_FROM} AND id > ? ORDER BY id LIMIT ?",
            (int(after), int(limit)),
        )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, [str(r[1]) for r in rows], float(rows[0][2]) if rows else None

    async def set_vectors(self, ids: Ids, vectors: np.ndarray, *, model: str) -> np.ndarray:
        """Give backlog rows their first vector: ``vectors`` ((n, dim) float32) made by ``model`` for ``ids``.

        One transaction. Only rows still without a vector are written (a row deleted meanwhile, or
        embedded already, is left alone), so no row is ever embedded twice. Returns the ids written,
        ascending int64; only these may be added to the vector index.
        """
        self._check_open()
        id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(id_array) == 0:
            return id_array
        matrix = as_matrix(vectors, len(id_array))
        dim = int(matrix.shape[1])
        row_of = {int(i): row for row, i in enumerate(id_array)}
        async with self._transaction() as conn:
            waiting: list[int] = []
            for start in range(0, len(id_array), _VECTOR_CHUNK):
                chunk = id_array[start : start + _VECTOR_CHUNK].tolist()
                marks = ",".join("?" * len(chunk))
                found = await self._write_fetchall(
                    f"SELECT id FROM events WHERE id IN ({marks}) AND embedding_model IS NULL", chunk)
                waiting += [int(r[0]) for r in found]
            waiting.sort()
            await conn.executemany(
                "UPDATE events SET embedding = ?, embedding_model = ?, embedding_dim = ? WHERE id = ?",
                [(matrix[row_of[i]].tobytes(), model, dim, i) for i in waiting],
            )
        return np.array(waiting, dtype=np.int64)

    async def mark_unembeddable(self, ids: Ids, reason: str) -> int:
        """Take rows the model cannot embed out of the backlog, noting ``reason``; returns rows marked.

        They stay stored and found by filters and words (FTS5); ``memory-agent reindex`` tries them again.
        """
        self._check_open()
        if len(ids) == 0:
            return 0
        async with self._transaction() as conn:
            before = conn.total_changes
            await conn.executemany(
                "UPDATE events SET embedding_error = ? WHERE id = ? AND embedding_model IS NULL",
                [(reason, int(i)) for i in ids],
            )
            return int(conn.total_changes - before)

    async def backlog(self) -> Backlog:
        """How many rows wait for a vector, the oldest of them, and how many the model could not embed.

        Reads the partial index ``events_backlog`` and the NULL range of the model index: a cost in
        proportion to the rows without a vector, not to the store.
        """
        rows = await self._fetchall(
            f"SELECT count(*), min(id) FROM {_BACKLOG_FROM}"
        )
        count, oldest = int(rows[0][0]), rows[0][1]
        received: float | None = None
        if oldest is not None:
            found = await self._fetchall("SELECT received_at FROM events WHERE id = ?", (int(oldest),))
            received = float(found[0][0]) if found else None
        failed = await self._fetchall(
            "SELECT count(*) FROM events WHERE embedding_model IS NULL AND embedding_error IS NOT NULL"
        )
        return Backlog(count, None if oldest is None else int(oldest), received, int(failed[0][0]))

    async def _count_backlog(self, where: str, params: Sequence[Any]) -> int:
        """Backlog rows matching the SQL condition ``where`` (from :func:`memory_agent.store.sql.where_clause`).

        Scans the backlog's partial index, checking each row: a cost in proportion to the backlog.
        """
        rows = await self._fetchall(f"SELECT count(*) FROM {_BACKLOG_FROM} AND ({where})", list(params))
        return int(rows[0][0])

    async def iter_vectors(
        self, *, batch: int = 10000, model: str | None = None, after: int = 0
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        """Stored embeddings in id order, ``batch`` rows at a time: ``(ids (n,) int64, vectors (n, dim) float32)``.

        Only rows of ``model`` when given, only ids above ``after``. Used to rebuild (or catch up) the
        vector index without re-embedding. Raises ``StoreError`` when one batch mixes dimensions
        (stored by different models).
        """
        last = int(after)
        model_sql = " AND embedding_model = ?" if model is not None else f" AND {HAS_VECTOR}"
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
            ids, vectors = self._decode(rows)
            yield ids, vectors
            last = int(ids[-1])

    async def vectors(self, ids: Ids) -> tuple[np.ndarray, np.ndarray]:
        """Stored embeddings of ``ids``: ``(found ids (m,) int64, vectors (m, dim) float32)``, ascending id.

        The float32 BLOBs exactly as stored (the index may hold them quantised). Ids not stored, and rows
        without a vector yet, are skipped; with none found the matrix is ``(0, 0)``. Raises ``StoreError`` when the rows hold
        embeddings of different dimensions.
        """
        self._check_open()
        id_array = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        rows: list[Any] = []
        for start in range(0, len(id_array), _VECTOR_CHUNK):
            chunk = id_array[start : start + _VECTOR_CHUNK].tolist()
            marks = ",".join("?" * len(chunk))
            rows += await self._fetchall(
                f"SELECT id, embedding, embedding_dim FROM events WHERE id IN ({marks}) AND {HAS_VECTOR} "
                "ORDER BY id", chunk
            )
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return self._decode(rows)

    async def sample_vectors(self, n: int, *, seed: int = 0) -> np.ndarray:
        """Up to ``n`` stored embeddings drawn uniformly without replacement (all when fewer are stored),
        ``(m, dim)`` float32 in id order; ``seed`` makes the draw repeatable. Used to train an IVF index."""
        rows = await self._fetchall(f"SELECT id FROM events WHERE {HAS_VECTOR}")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if len(ids) > n:
            ids = np.random.default_rng(seed).choice(ids, size=n, replace=False)
        return (await self.vectors(ids))[1]

    async def vector_models(self) -> tuple[VectorModel, ...]:
        """The embedding models of stored vectors, most rows first (rows without a vector are left out)."""
        rows = await self._fetchall(
            f"SELECT embedding_model, embedding_dim, count(*) FROM events WHERE {HAS_VECTOR} "
            "GROUP BY embedding_model, embedding_dim ORDER BY count(*) DESC, embedding_model"
        )
        return tuple(VectorModel(str(r[0]), int(r[1]), int(r[2])) for r in rows)

    async def vector_summary(self, *, up_to: int | None = None) -> VectorSummary:
        """Count, max id and sum of ids of the rows with a vector (or of those with ``id <= up_to``), plus
        the models of all vectors: what a saved index must match. Reads an index, not the table (no row
        is loaded). Rows still waiting for a vector are not counted: the index cannot hold them yet."""
        # "+id": compare outside the primary key, so a covering index is scanned, not the table rows.
        where, params = (f"WHERE {HAS_VECTOR} AND +id <= ?", [int(up_to)]) if up_to is not None else (
            f"WHERE {HAS_VECTOR}", [])
        rows = await self._fetchall(
            f"SELECT count(*), coalesce(max(id), 0), coalesce(sum(id), 0) FROM events {where}", params
        )
        count, max_id, id_sum = (int(v) for v in rows[0])
        return VectorSummary(count, max_id, id_sum, await self.vector_models())
