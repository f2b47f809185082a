"""The vector index: FAISS over the stored embeddings, keyed by SQLite ids, persisted next to the store.

The index is a cache of SQLite: when its file is missing, corrupt or stale it is rebuilt from the
stored vectors (no re-embedding); when it is only behind (a crash after SQLite committed newer rows)
the missing rows are added. Its kind follows the store's size (``[index]`` in the config): exact
``flat`` below ``exact_threshold`` vectors, ``ivf`` (approximate, 8-bit codes) above, see
:mod:`memory_agent.index_kinds`. :class:`AsyncIndex` owns the index on one thread and keeps a search
restricted to a time window or filters correct: a narrow restriction is scored exactly from the float32
vectors in SQLite, a wide one by the IVF with an id selector, re-scored exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from memory_agent.config import IndexConfig
from memory_agent.errors import ConfigError, IndexError_
from memory_agent.index_kinds import (
    MIN_POINTS_PER_LIST,
    FaissIndex,
    IndexMeta,
    IVFIndex,
    auto_nlist,
    exact_top_k,
    load_index,
    read_meta,
    sidecar_path,
)
from memory_agent.store import EventStore, VectorModel

__all__ = [
    "AsyncIndex",
    "FaissIndex",
    "IVFIndex",
    "IndexMeta",
    "VectorIndex",
    "VectorModelMismatch",
    "VectorSource",
    "load_index",
    "open_index",
    "plan_index",
    "read_meta",
    "sidecar_path",
]

# The fewest lists an IVF index gets: below 32 * 39 vectors the store stays flat.
_MIN_LISTS = 32
# Training points per list (FAISS samples at most 256 per centroid; 39 is its minimum).
_TRAIN_POINTS_PER_LIST = 50


class VectorModelMismatch(ConfigError):
    """Stored vectors were made by another model (or dimension) than the configured one.

    ``configured`` is ``(model, dim)``; ``stored`` lists the models found in SQLite. Fix: reindex the
    store (``memory-agent reindex``) or configure the model the vectors were made with.
    """

    def __init__(self, message: str, *, configured: tuple[str, int], stored: tuple[VectorModel, ...]) -> None:
        super().__init__(message)
        self.configured = configured
        self.stored = stored


@runtime_checkable
class VectorIndex(Protocol):
    """Vectors keyed by int64 ids, searched by inner product (cosine on normalised vectors).

    ``exact`` tells whether ``search`` scores are exact (flat) or approximate (ivf).
    """

    kind: str
    exact: bool
    model: str

    @property
    def dim(self) -> int: ...

    @property
    def max_id(self) -> int: ...

    @property
    def nlist(self) -> int: ...

    def __len__(self) -> int: ...

    def ids(self) -> np.ndarray: ...

    def vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray: ...

    def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Add (or replace) ``vectors`` ((n, dim) float32) under ``ids`` ((n,) int64)."""
        ...

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids``; returns how many were present."""
        ...

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` ``(id, cosine)`` best first for ``query`` ((dim,) float32), only among ``allowed``."""
        ...

    def meta(self, sha256: str = "") -> IndexMeta: ...

    def clone(self) -> Any: ...

    def save(self, path: Path) -> None:
        """Persist atomically to ``path``."""
        ...


class VectorSource(Protocol):
    """Where the exact float32 vectors live (:meth:`memory_agent.store.EventStore.vectors`)."""

    async def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def plan_index(config: IndexConfig, count: int, *, current: tuple[str, int] | None = None) -> tuple[str, int]:
    """The ``(kind, nlist)`` an index over ``count`` vectors should have; ``current`` is the saved index's.

    ``auto`` is flat below ``exact_threshold`` and ivf from it on, keeping a saved ivf down to half the
    threshold (hysteresis: deleting a few events does not flip the kind back). ivf needs
    ``32 * 39`` vectors to train its lists, so a smaller store is flat whatever the config says.
    ``nlist``: the configured value or :func:`auto_nlist`, at most ``count / 39``; with the auto value a
    saved ivf keeps its lists while they are within a factor of 4 of it (no retraining at each start).
    """
    kind = config.kind
    if kind == "auto":
        keep = current is not None and current[0] == "ivf" and count >= config.exact_threshold // 2
        kind = "ivf" if count >= config.exact_threshold or keep else "flat"
    if kind != "ivf" or count < _MIN_LISTS * MIN_POINTS_PER_LIST:
        return "flat", 0
    if config.nlist:
        return "ivf", min(config.nlist, count // MIN_POINTS_PER_LIST)
    nlist = max(_MIN_LISTS, auto_nlist(count))
    if current is not None and current[0] == "ivf" and nlist // 4 <= current[1] <= nlist * 4:
        return "ivf", current[1]
    return "ivf", nlist


def _check_models(models: tuple[VectorModel, ...], *, dim: int, model: str) -> None:
    foreign = [m for m in models if (m.model, m.dim) != (model, dim)]
    if not foreign:
        return
    found = ", ".join(f"{m.model!r} (dim {m.dim}): {m.count} rows" for m in models)
    raise VectorModelMismatch(
        f"embedder model: configured {model!r} (dim {dim}) but SQLite holds vectors of {found}; "
        "run `memory-agent reindex` to re-embed them, or configure the model they were made with",
        configured=(model, dim),
        stored=models,
    )


def _describe_stale(meta: IndexMeta, *, count: int, max_id: int, id_sum: int) -> str | None:
    if (meta.count, meta.max_id, meta.id_sum) != (count, max_id, id_sum):
        return f"file has {meta.count} vectors up to id {meta.max_id}, SQLite has {count} up to id {max_id}"
    return None


async def _build(
    store: EventStore, *, kind: str, nlist: int, dim: int, model: str, config: IndexConfig
) -> FaissIndex | IVFIndex:
    index: FaissIndex | IVFIndex
    if kind == "ivf":
        sample = await store.sample_vectors(_TRAIN_POINTS_PER_LIST * nlist)
        index = await asyncio.to_thread(IVFIndex.trained, sample, nlist=nlist, model=model, nprobe=config.nprobe)
        del sample
    else:
        index = FaissIndex(dim, model=model)
    async for ids, vectors in store.iter_vectors(model=model):
        await asyncio.to_thread(index.add, ids, vectors)
    return index


async def open_index(
    path: Path, store: EventStore, *, dim: int, model: str, config: IndexConfig | None = None
) -> tuple[FaissIndex | IVFIndex, str]:
    """Load the index at ``path`` if it agrees with ``store`` and ``config``, else repair it and save.

    Agreement means same model, dim, kind and lists (see :func:`plan_index`), row count, max id and sum
    of ids. A file that is only behind SQLite (it holds exactly the rows up to its max id) gets the
    newer rows added; anything else is rebuilt from ``store.iter_vectors()`` (no re-embedding; an ivf
    index is first trained on a sample of the stored vectors). Returns the index and one line saying what
    happened. Raises ``VectorModelMismatch`` (a ``ConfigError``) when SQLite holds vectors of another
    model or dimension than ``model``/``dim``. Blocking FAISS work runs in worker threads.
    """
    path = Path(path)
    config = config or IndexConfig()
    started = time.perf_counter()
    # The file is read and checked (FAISS thread) while SQLite sums its ids.
    loading = asyncio.create_task(_try_load(path, dim=dim, nprobe=config.nprobe))
    try:
        summary = await store.vector_summary()
        _check_models(summary.models, dim=dim, model=model)
    except BaseException:
        loading.cancel()
        raise
    loaded = await loading
    reason: str
    current: tuple[str, int] | None = None
    if loaded is None:
        reason = "index file missing"
    elif isinstance(loaded, IndexError_):
        reason = f"index file corrupt ({loaded})"
    else:
        index = loaded
        current = (index.kind, index.nlist)
        kind, nlist = plan_index(config, summary.count, current=current)
        meta = await asyncio.to_thread(index.meta)
        stale = _describe_stale(meta, count=summary.count, max_id=summary.max_id, id_sum=summary.id_sum)
        if index.model != model or index.dim != dim:
            reason = f"index stale (file has model {index.model!r} dim {index.dim}, configured {model!r} dim {dim})"
        elif (kind, nlist) != current:
            reason = (
                f"index kind {index.kind}"
                + (f" with {index.nlist} lists" if index.nlist else "")
                + f" but {summary.count} vectors want {kind}"
                + (f" with {nlist} lists" if nlist else "")
            )
        elif stale is None:
            differ = await _spot_check(store, index)
            if differ is None:
                return index, f"loaded {len(index)} vectors from {path} ({index.kind})"
            reason = f"index stale ({differ})"
        elif await _is_prefix(store, meta):
            # Behind SQLite (a crash between two saves): add what it lacks instead of rebuilding.
            added = 0
            async for ids, vectors in store.iter_vectors(model=model, after=meta.max_id):
                await asyncio.to_thread(index.add, ids, vectors)
                added += len(ids)
            await asyncio.to_thread(index.save, path)
            elapsed = time.perf_counter() - started
            return index, (
                f"index stale ({stale}): rebuilt {len(index)} vectors from SQLite ({index.kind}) by adding "
                f"the {added} it lacked, in {elapsed:.1f} s, saved to {path}"
            )
        else:
            reason = f"index stale ({stale})"
        del index
    kind, nlist = plan_index(config, summary.count, current=current)
    index = await _build(store, kind=kind, nlist=nlist, dim=dim, model=model, config=config)
    await asyncio.to_thread(index.save, path)
    elapsed = time.perf_counter() - started
    lists = f" with {index.nlist} lists" if index.nlist else ""
    return index, (
        f"{reason}: rebuilt {len(index)} vectors from SQLite ({index.kind}{lists}) in {elapsed:.1f} s, "
        f"saved to {path}"
    )


async def _try_load(path: Path, *, dim: int, nprobe: int) -> FaissIndex | IVFIndex | IndexError_ | None:
    if not path.exists():
        return None
    try:
        return await asyncio.to_thread(load_index, path, dim=dim, nprobe=nprobe)
    except IndexError_ as exc:
        return exc


async def _is_prefix(store: EventStore, meta: IndexMeta) -> bool:
    """True when the saved index holds exactly SQLite's rows with ``id <= meta.max_id``."""
    head = await store.vector_summary(up_to=meta.max_id)
    return (head.count, head.max_id, head.id_sum) == (meta.count, meta.max_id, meta.id_sum)


async def _spot_check(store: EventStore, index: FaissIndex | IVFIndex, *, sample: int = 32) -> str | None:
    """Compare the vectors of up to ``sample`` ids (evenly spread) with SQLite; ``None`` when they agree.

    Catches an index file with the right ids but other vectors (say restored from another store).
    Flat vectors must be identical; ivf codes must decode to a cosine of at least 0.98 with the stored.
    """
    ids = np.sort(await asyncio.to_thread(index.ids))
    if len(ids) == 0:
        return None
    picked = ids[np.linspace(0, len(ids) - 1, num=min(sample, len(ids))).astype(np.int64)]
    found, stored = await store.vectors(picked)
    held = await asyncio.to_thread(index.vectors, found)
    if index.exact:
        bad = int(np.sum(np.any(held != stored, axis=1)))
    else:
        bad = int(np.sum(np.sum(held * stored, axis=1) < 0.98 * np.sum(stored * stored, axis=1)))
    bad += len(picked) - len(found)
    return None if bad == 0 else f"vectors differ from SQLite at {bad} of {len(picked)} sampled ids"


def _one_thread() -> None:
    # One query at a time gains nothing from OpenMP fan-out on a shared two-core machine, and the
    # threads' spinning costs tens of ms under load (measured: 100k flat, 9 ms on one thread vs 87 ms).
    faiss.omp_set_num_threads(1)


class AsyncIndex:
    """Async owner of a :class:`VectorIndex`: every call runs on one dedicated thread, in call order.

    With ``vectors`` (the store) and an approximate index (ivf), :meth:`search` is corrected from the
    exact float32 vectors: a restriction to at most ``max(exact_candidates, k * rerank)`` ids is scored
    exactly over all of them (the brute-force top k), otherwise the index's ``k * rerank`` best
    candidates are re-scored exactly (``rerank = 0`` keeps the index's own scores).
    ``await close()`` stops the thread (idempotent); it does not save.
    """

    def __init__(
        self,
        index: FaissIndex | IVFIndex,
        *,
        vectors: VectorSource | None = None,
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
            raise IndexError_("vector index is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """See :meth:`FaissIndex.add`."""
        await self._call(self.index.add, ids, vectors)

    async def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """See :meth:`FaissIndex.remove`."""
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
        # At most max(exact_candidates, k * rerank) rows: ~0.1 ms of numpy, less than a hop to a thread.
        return exact_top_k(query, found, matrix, k)

    async def save(self, path: Path) -> None:
        """Save a copy taken on the index's thread (a memory copy: ~0.2 s for 0.4 GB) from another thread,
        so searches wait for the copy, not for writing and hashing the file. See :meth:`FaissIndex.save`."""
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
