"""The async owner of a vector index: every FAISS call on one dedicated thread, in call order.

A search restricted to a time window or filters stays correct: a narrow restriction is scored exactly
from the float32 vectors in SQLite, a wide one by the index with an id selector, re-scored exactly when
the index is approximate (IVF).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from memory_agent.errors import IndexFileError
from memory_agent.index.base import exact_top_k
from memory_agent.protocols import VectorIndex

if TYPE_CHECKING:
    from memory_agent.store.events import EventStore

__all__ = ["AsyncIndex"]


def _one_thread() -> None:
    # One query at a time gains nothing from OpenMP fan-out on a shared two-core machine, and the
    # threads' spinning costs tens of ms under load (docs/benchmarks.md#design-threads).
    faiss.omp_set_num_threads(1)


class AsyncIndex:
    """Async owner of a :class:`~memory_agent.protocols.VectorIndex`: every call runs on one dedicated
    thread, in call order.

    With ``vectors`` (the store) and an approximate index (ivf), :meth:`search` is corrected from the
    exact float32 vectors: a restriction to at most ``max(exact_candidates, k * rerank)`` ids is scored
    exactly over all of them (the brute-force top k), otherwise the index's ``k * rerank`` best
    candidates are re-scored exactly (``rerank = 0`` keeps the index's own scores).
    ``await close()`` stops the thread (idempotent; an index left open warns with a ``ResourceWarning``);
    it does not save. Calls after ``close()`` raise ``IndexFileError``.
    """

    def __init__(
        self,
        index: VectorIndex,
        *,
        vectors: EventStore | None = None,
        exact_candidates: int = 2048,
        rerank: int = 2,
    ) -> None:
        self.index = index
        self._source = vectors
        self._exact_candidates = exact_candidates
        self._rerank = rerank
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss", initializer=_one_thread)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss-save")
        self._closed = False

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            _warn("AsyncIndex was never closed", ResourceWarning, stacklevel=1)

    @property
    def dim(self) -> int:
        return self.index.dim

    @property
    def kind(self) -> str:
        return self.index.kind

    @property
    def model(self) -> str:
        return self.index.model

    def __len__(self) -> int:
        return len(self.index)

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._closed:
            raise IndexFileError("vector index is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """See :meth:`BaseIndex.add`."""
        await self._call(self.index.add, ids, vectors)

    async def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """See :meth:`BaseIndex.remove`."""
        return int(await self._call(self.index.remove, ids))

    async def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Top ``k`` ``(id, cosine)`` best first for ``query`` ((dim,) float32), only among ``allowed``
        (int64 ids; ``None`` = all). Exact for a flat index and for a narrow ``allowed`` (see the class)."""
        if self.index.exact or self._source is None or k <= 0:
            hits: list[tuple[int, float]] = await self._call(self.index.search, query, k, allowed)
            return hits
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64).reshape(-1)
            if len(allowed) <= max(self._exact_candidates, k * self._rerank):
                return await self._exact(query, allowed, k)
        hits = await self._call(self.index.search, query, k * max(self._rerank, 1), allowed)
        if not self._rerank or not hits:
            return hits[:k]
        return await self._exact(query, np.fromiter((h[0] for h in hits), dtype=np.int64, count=len(hits)), k)

    async def _exact(self, query: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[int, float]]:
        assert self._source is not None
        found, matrix = await self._source.vectors(ids)
        if len(found) == 0:
            return []
        # At most max(exact_candidates, k * rerank) rows: cheaper here than a hop to a thread
        # (docs/benchmarks.md#design-scan-costs).
        return exact_top_k(query, found, matrix, k)

    async def save(self, path: Path) -> None:
        """Save a copy taken on the index's thread (a memory copy, docs/benchmarks.md#design-scan-costs) from another thread,
        so searches wait for the copy, not for writing and hashing the file. See :meth:`BaseIndex.save`."""
        snapshot = await self._call(self.index.clone)
        # One writer thread: saves never overlap, even when a caller was cancelled mid-save.
        await asyncio.get_running_loop().run_in_executor(self._writer, snapshot.save, path)

    async def close(self) -> None:
        """Wait for queued calls, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        await asyncio.to_thread(self._writer.shutdown, wait=True)
