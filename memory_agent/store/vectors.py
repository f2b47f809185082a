"""Embeddings as stored in the events table: float32 BLOBs with their model name and dimension.

:class:`EmbeddingRows` is the part of :class:`memory_agent.store.EventStore` that reads and replaces
embeddings (rebuilding the FAISS index, exact re-scoring, reindexing); it runs on the store's
connection and write lock.
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

__all__ = ["EmbeddingRows", "Ids", "VectorModel", "VectorSummary", "as_matrix"]

Ids = Sequence[int] | np.ndarray
"""Event ids: a sequence of ints or an int64 array."""

# Ids per statement when reading embeddings by id (SQLite >= 3.32 allows 32766 parameters).
_VECTOR_CHUNK = 8192


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

        One transaction; used by reindexing after a model change. Returns the number of rows updated
        (missing ids are skipped).
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
                "UPDATE events SET embedding = ?, embedding_model = ?, embedding_dim = ? WHERE id = ?", rows
            )
            changed = conn.total_changes - before
        return changed

    async def iter_vectors(
        self, *, batch: int = 10000, model: str | None = None, after: int = 0
    ) -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        """Stored embeddings in id order, ``batch`` rows at a time: ``(ids (n,) int64, vectors (n, dim) float32)``.

        Only rows of ``model`` when given, only ids above ``after``. Used to rebuild (or catch up) the
        vector index without re-embedding. Raises ``StoreError`` when one batch mixes dimensions
        (stored by different models).
        """
        last = int(after)
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
            ids, vectors = self._decode(rows)
            yield ids, vectors
            last = int(ids[-1])

    async def vectors(self, ids: Ids) -> tuple[np.ndarray, np.ndarray]:
        """Stored embeddings of ``ids``: ``(found ids (m,) int64, vectors (m, dim) float32)``, ascending id.

        The float32 BLOBs exactly as stored (the index may hold them quantised). Ids not stored are
        skipped; with none found the matrix is ``(0, 0)``. Raises ``StoreError`` when the rows hold
        embeddings of different dimensions.
        """
        self._check_open()
        id_array = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        rows: list[Any] = []
        for start in range(0, len(id_array), _VECTOR_CHUNK):
            chunk = id_array[start : start + _VECTOR_CHUNK].tolist()
            marks = ",".join("?" * len(chunk))
            rows += await self._fetchall(
                f"SELECT id, embedding, embedding_dim FROM events WHERE id IN ({marks}) ORDER BY id", chunk
            )
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return self._decode(rows)

    async def sample_vectors(self, n: int, *, seed: int = 0) -> np.ndarray:
        """Up to ``n`` stored embeddings drawn uniformly without replacement (all when fewer are stored),
        ``(m, dim)`` float32 in id order; ``seed`` makes the draw repeatable. Used to train an IVF index."""
        rows = await self._fetchall("SELECT id FROM events")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if len(ids) > n:
            ids = np.random.default_rng(seed).choice(ids, size=n, replace=False)
        return (await self.vectors(ids))[1]

    async def vector_models(self) -> tuple[VectorModel, ...]:
        """The embedding models of stored rows, most rows first."""
        rows = await self._fetchall(
            "SELECT embedding_model, embedding_dim, count(*) FROM events "
            "GROUP BY embedding_model, embedding_dim ORDER BY count(*) DESC, embedding_model"
        )
        return tuple(VectorModel(str(r[0]), int(r[1]), int(r[2])) for r in rows)

    async def vector_summary(self, *, up_to: int | None = None) -> VectorSummary:
        """Count, max id and sum of ids of all rows (or of those with ``id <= up_to``), plus the models of
        all rows: what a saved index must match. Reads an index, not the table (no row is loaded)."""
        # "+id": compare outside the primary key, so a covering index is scanned, not the table rows.
        where, params = ("WHERE +id <= ?", [int(up_to)]) if up_to is not None else ("", [])
        rows = await self._fetchall(
            f"SELECT count(*), coalesce(max(id), 0), coalesce(sum(id), 0) FROM events {where}", params
        )
        count, max_id, id_sum = (int(v) for v in rows[0])
        return VectorSummary(count, max_id, id_sum, await self.vector_models())
