"""The vector index: FAISS over the stored embeddings, keyed by SQLite ids, persisted next to the store.

The index is a cache of SQLite: when its file is missing, corrupt or stale it is rebuilt from the
stored vectors (no re-embedding). Scores are inner products of L2-normalised vectors (cosine).
A save writes ``<path>`` (the FAISS file) and ``<path>.json`` (a sidecar with count, max id, id sum,
dim, model and the file's SHA-256), each via a temporary file and an atomic rename.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from memory_agent.errors import ConfigError, IndexError_
from memory_agent.store import EventStore, VectorModel

__all__ = [
    "AsyncIndex",
    "FaissIndex",
    "IndexMeta",
    "VectorIndex",
    "VectorModelMismatch",
    "open_index",
    "sidecar_path",
]

_FORMAT = 1


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
    """Vectors keyed by int64 ids, searched by inner product (cosine on normalised vectors)."""

    kind: str

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) ``vectors`` ((n, dim) float32) under ``ids`` ((n,) int64)."""
        ...

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids``; returns how many were present."""
        ...

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` ``(id, cosine)`` best first for ``query`` ((dim,) float32), only among ``allowed``."""
        ...

    def save(self, path: Path) -> None:
        """Persist atomically to ``path``."""
        ...


@dataclass(frozen=True, slots=True)
class IndexMeta:
    """The sidecar of a saved index: what it holds (for staleness checks) and the file's SHA-256."""

    kind: str
    dim: int
    model: str
    count: int
    max_id: int
    id_sum: int
    sha256: str
    format: int = _FORMAT


def sidecar_path(path: Path) -> Path:
    """``<path>.json``: where the metadata of the index file at ``path`` lives."""
    return path.with_name(path.name + ".json")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FaissIndex:
    """``IndexIDMap2`` over ``IndexFlatIP`` (exact search); ids are SQLite event ids.

    Blocking: use from one thread (see :class:`AsyncIndex`). ``model`` names the embedder the vectors
    came from and is recorded when saving.
    """

    kind = "flat"

    def __init__(self, dim: int, *, model: str = "", index: Any = None) -> None:
        if index is None:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._index = index
        self.model = model
        ids = self.ids()
        self._max_id = int(ids.max()) if len(ids) else 0

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    @property
    def max_id(self) -> int:
        """Largest id ever added (0 when empty); ids above it are known to be absent."""
        return self._max_id

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids held, (n,) int64, in insertion order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """The stored vectors of ``ids``, ``(n, dim)`` float32. Raises ``KeyError`` for an id not held."""
        id_array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        out = np.empty((len(id_array), self.dim), dtype=np.float32)
        for row, key in enumerate(id_array):
            try:
                out[row] = self._index.reconstruct(int(key))
            except RuntimeError as exc:
                raise KeyError(int(key)) from exc
        return out

    def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Add ``vectors`` ((n, dim) float32, normalised) under ``ids``; an id already held is replaced.

        Raises ``ValueError`` on a shape mismatch or ids repeated within the call.
        """
        id_array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(id_array), self.dim):
            raise ValueError(f"vectors must have shape ({len(id_array)}, {self.dim}), got {matrix.shape}")
        if len(id_array) == 0:
            return
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("ids repeated within one add")
        old = id_array[id_array <= self._max_id]
        if len(old):
            self.remove(old)
        self._index.add_with_ids(matrix, id_array)
        self._max_id = max(self._max_id, int(id_array.max()))

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many vectors were removed."""
        id_array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if len(id_array) == 0 or len(self) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(id_array)))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Exact top ``k`` ``(id, cosine)``, best first, for ``query`` ((dim,) float32, normalised).

        ``allowed`` ((m,) int64) restricts the search to those ids inside FAISS (IDSelector), so the
        result is exact among them; ``None`` means all ids, an empty array means none.
        """
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"query must have shape ({self.dim},), got {np.shape(query)}")
        n = len(self)
        if k <= 0 or n == 0:
            return []
        if allowed is None:
            scores, labels = self._index.search(q, min(k, n))
        else:
            allowed_ids = np.ascontiguousarray(allowed, dtype=np.int64).reshape(-1)
            if len(allowed_ids) == 0:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed_ids))  # type: ignore[call-arg]
            scores, labels = self._index.search(q, min(k, n, len(allowed_ids)), params=params)
        return [(int(i), float(s)) for i, s in zip(labels[0], scores[0], strict=True) if i != -1]

    def meta(self, sha256: str = "") -> IndexMeta:
        """The sidecar record describing the current contents."""
        ids = self.ids()
        return IndexMeta(
            kind=self.kind,
            dim=self.dim,
            model=self.model,
            count=len(ids),
            max_id=int(ids.max()) if len(ids) else 0,
            id_sum=int(ids.sum()) if len(ids) else 0,
            sha256=sha256,
        )

    def save(self, path: Path) -> None:
        """Write the index to ``path`` and its sidecar to ``<path>.json``, each atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self._index).tobytes()
        meta = self.meta(hashlib.sha256(data).hexdigest())
        _write_atomic(path, data)
        _write_atomic(sidecar_path(path), json.dumps(_meta_to_json(meta), indent=1).encode())

    @classmethod
    def load(cls, path: Path, *, dim: int) -> FaissIndex:
        """Read an index saved by :meth:`save`.

        Raises ``IndexError_`` (with ``path``) when the file or its sidecar is missing, unreadable or
        corrupt (checksum, FAISS format, id checksum), or holds vectors of another dimension than ``dim``.
        """
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise IndexError_(f"index file {path} is missing", path=where)
        meta = read_meta(path)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.sha256:
            raise IndexError_(f"index file {path} does not match the checksum in its sidecar", path=where)
        try:
            raw = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexError_(f"index file {path} is not a FAISS index ({exc})", path=where) from exc
        if not isinstance(raw, faiss.IndexIDMap2):
            raise IndexError_(
                f"index file {path} holds a {type(raw).__name__}, not an IndexIDMap2", path=where
            )
        if raw.d != dim or meta.dim != dim:
            raise IndexError_(f"index file {path} has dimension {raw.d}, expected {dim}", path=where)
        index = cls(dim, model=meta.model, index=raw)
        got = index.meta(meta.sha256)
        if (got.count, got.max_id, got.id_sum) != (meta.count, meta.max_id, meta.id_sum):
            raise IndexError_(f"index file {path} does not hold the ids its sidecar lists", path=where)
        return index


def _meta_to_json(meta: IndexMeta) -> dict[str, Any]:
    return {
        "format": meta.format,
        "kind": meta.kind,
        "dim": meta.dim,
        "model": meta.model,
        "count": meta.count,
        "max_id": meta.max_id,
        "id_sum": meta.id_sum,
        "sha256": meta.sha256,
    }


def read_meta(path: Path) -> IndexMeta:
    """The sidecar of the index at ``path``. Raises ``IndexError_`` when missing or malformed."""
    side = sidecar_path(path)
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
        meta = IndexMeta(
            kind=str(raw["kind"]),
            dim=int(raw["dim"]),
            model=str(raw["model"]),
            count=int(raw["count"]),
            max_id=int(raw["max_id"]),
            id_sum=int(raw["id_sum"]),
            sha256=str(raw["sha256"]),
            format=int(raw["format"]),
        )
    except FileNotFoundError as exc:
        raise IndexError_(f"index sidecar {side} is missing", path=str(path)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexError_(f"index sidecar {side} is unreadable ({exc})", path=str(path)) from exc
    if meta.format != _FORMAT:
        raise IndexError_(
            f"index sidecar {side} has format {meta.format}, expected {_FORMAT}", path=str(path)
        )
    return meta


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


def _describe_stale(
    meta: IndexMeta, *, count: int, max_id: int, id_sum: int, dim: int, model: str
) -> str | None:
    if meta.model != model or meta.dim != dim:
        return f"file has model {meta.model!r} dim {meta.dim}, configured {model!r} dim {dim}"
    if (meta.count, meta.max_id, meta.id_sum) != (count, max_id, id_sum):
        return f"file has {meta.count} vectors up to id {meta.max_id}, SQLite has {count} up to id {max_id}"
    return None


async def open_index(path: Path, store: EventStore, *, dim: int, model: str) -> tuple[FaissIndex, str]:
    """Load the index at ``path`` if it agrees with ``store``, else rebuild it from stored vectors and save.

    Agreement means same model, dim, row count, max id and sum of ids. A rebuild reads
    ``store.iter_vectors()`` (no re-embedding). Returns the index and one line saying what happened.
    Raises ``VectorModelMismatch`` (a ``ConfigError``) when SQLite holds vectors of another model or
    dimension than ``model``/``dim``. Blocking FAISS work runs in a worker thread.
    """
    path = Path(path)
    summary = await store.vector_summary()
    _check_models(summary.models, dim=dim, model=model)
    reason: str
    if not path.exists():
        reason = "index file missing"
    else:
        try:
            index = await asyncio.to_thread(FaissIndex.load, path, dim=dim)
        except IndexError_ as exc:
            reason = f"index file corrupt ({exc})"
        else:
            stale = _describe_stale(
                index.meta(),
                count=summary.count,
                max_id=summary.max_id,
                id_sum=summary.id_sum,
                dim=dim,
                model=model,
            )
            if stale is None:
                return index, f"loaded {len(index)} vectors from {path}"
            reason = f"index stale ({stale})"
    started = time.perf_counter()
    index = FaissIndex(dim, model=model)
    async for ids, vectors in store.iter_vectors(model=model):
        await asyncio.to_thread(index.add, ids, vectors)
    await asyncio.to_thread(index.save, path)
    elapsed = time.perf_counter() - started
    return index, f"{reason}: rebuilt {len(index)} vectors from SQLite in {elapsed:.1f} s, saved to {path}"


class AsyncIndex:
    """Async owner of a :class:`FaissIndex`: every call runs on one dedicated thread, in call order.

    ``await close()`` stops the thread (idempotent); it does not save.
    """

    def __init__(self, index: FaissIndex) -> None:
        self.index = index
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faiss")
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
        """See :meth:`FaissIndex.search`."""
        result: list[tuple[int, float]] = await self._call(self.index.search, query, k, allowed)
        return result

    async def save(self, path: Path) -> None:
        """See :meth:`FaissIndex.save`."""
        await self._call(self.index.save, path)

    async def close(self) -> None:
        """Wait for queued calls, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
