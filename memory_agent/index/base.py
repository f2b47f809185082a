"""What the two index kinds share: the FAISS object, ids, vectors, metadata, saving; exact scoring.

Scores are inner products of L2-normalised vectors (cosine). See :mod:`memory_agent.index.flat` and
:mod:`memory_agent.index.ivf` for the kinds, :mod:`memory_agent.index.files` for the saved files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from memory_agent.index.files import IndexMeta, fsync_replace, sha256_file, tmp_path, write_meta

__all__ = ["BaseIndex", "as_ids", "exact_top_k", "id_selector"]


def id_selector(allowed: np.ndarray) -> tuple[Any, np.ndarray]:
    """A FAISS ``IDSelectorBitmap`` accepting exactly ``allowed`` ((m,) int64, ids >= 0).

    Returns ``(selector, bitmap)``: the selector points into ``bitmap``, which the caller must keep
    alive while searching. Membership is one bit test, so a search over n vectors costs n bit tests
    plus the distances of the members (an ``IDSelectorBatch`` would hash every id).
    """
    ids = np.ascontiguousarray(allowed, dtype=np.int64).reshape(-1)
    if len(ids) and int(ids.min()) < 0:
        raise ValueError("ids must be >= 0")
    top = int(ids.max()) if len(ids) else 0
    bits = np.zeros(top + 1, dtype=bool)
    bits[ids] = True
    bitmap = np.packbits(bits, bitorder="little")
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap


def exact_top_k(query: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Exact top ``k`` ``(id, cosine)`` best first (ties by smaller id) of ``vectors`` ((m, dim) float32,
    rows keyed by ``ids`` (m,) int64) for ``query`` ((dim,) float32). Blocking (numpy)."""
    if k <= 0 or len(ids) == 0:
        return []
    scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


def as_ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)


class BaseIndex:
    """What both kinds share: the FAISS object, its model name, max id, meta, save and query checks."""

    kind: ClassVar[str]
    exact: ClassVar[bool]

    def __init__(self, index: Any, *, model: str) -> None:
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

    @property
    def nlist(self) -> int:
        """Inverted lists (0 for an exact index)."""
        return 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids held, (n,) int64."""
        raise NotImplementedError

    def _query(self, query: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise ValueError(f"query must have shape ({self.dim},), got {np.shape(query)}")
        return q

    def _check_add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        id_array = as_ids(ids)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(id_array), self.dim):
            raise ValueError(f"vectors must have shape ({len(id_array)}, {self.dim}), got {matrix.shape}")
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("ids repeated within one add")
        return id_array, matrix

    def vectors(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """The vectors held for ``ids``, ``(n, dim)`` float32: exact for flat, the 8-bit approximations for
        IVF (SQLite holds the exact vectors). Raises ``KeyError`` for an id not held."""
        id_array = as_ids(ids)
        out = np.empty((len(id_array), self.dim), dtype=np.float32)
        for row, key in enumerate(id_array):
            try:
                out[row] = self._index.reconstruct(int(key))
            except RuntimeError as exc:
                raise KeyError(int(key)) from exc
        return out

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many vectors were removed. Per kind."""
        raise NotImplementedError

    def add(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Add ``vectors`` ((n, dim) float32, normalised) under ``ids``; an id already held is replaced.

        Raises ``ValueError`` on a shape mismatch or ids repeated within the call.
        """
        id_array, matrix = self._check_add(ids, vectors)
        if len(id_array) == 0:
            return
        old = id_array[id_array <= self._max_id]
        if len(old):
            self.remove(old)
        self._index.add_with_ids(matrix, id_array)
        self._max_id = max(self._max_id, int(id_array.max()))

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
            nlist=self.nlist,
        )

    def clone(self) -> Any:
        """An independent copy of the same kind (FAISS ``clone_index``: a memory copy, no training)."""
        raise NotImplementedError

    def save(self, path: Path) -> None:
        """Write the index to ``path`` and its sidecar to ``<path>.json``, each atomically (temporary file,
        fsync, rename). The FAISS file is written straight to disk, never copied in memory."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(path)
        try:
            faiss.write_index(self._index, str(tmp))
            meta = self.meta(sha256_file(tmp))
            fsync_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        write_meta(path, meta)
