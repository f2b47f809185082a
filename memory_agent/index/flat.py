"""Kind ``"flat"``: exact search over every vector, 4 bytes per dimension per vector.

Used below ``index.exact_threshold`` vectors (see :func:`memory_agent.index.repair.plan_index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from memory_agent.index.base import BaseIndex, as_ids, id_selector

__all__ = ["FlatIndex"]


class FlatIndex(BaseIndex):
    """Kind ``"flat"``: ``IndexIDMap2`` over ``IndexFlatIP`` (exact search); ids are SQLite event ids.

    Blocking: use from one thread (see :class:`memory_agent.index.async_index.AsyncIndex`). ``model`` names the
    embedder the vectors came from and is recorded when saving.
    """

    kind = "flat"
    exact = True

    def __init__(self, dim: int, *, model: str = "", index: Any = None) -> None:
        if index is None:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        super().__init__(index, model=model)

    def ids(self) -> np.ndarray:
        """All ids held, (n,) int64, in insertion order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def clone(self) -> FlatIndex:
        """An independent copy (see :meth:`BaseIndex.clone`)."""
        return FlatIndex(self.dim, model=self.model, index=faiss.clone_index(self._index))

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many vectors were removed."""
        id_array = as_ids(ids)
        if len(id_array) == 0 or len(self) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(id_array)))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Exact top ``k`` ``(id, cosine)``, best first, for ``query`` ((dim,) float32, normalised).

        ``allowed`` ((m,) int64) restricts the search to those ids inside FAISS (an ``IDSelectorBitmap``),
        so the result is exact among them; ``None`` means all ids, an empty array means none.
        """
        q = self._query(query)
        n = len(self)
        if k <= 0 or n == 0:
            return []
        if allowed is None:
            scores, labels = self._index.search(q, min(k, n))
        else:
            allowed_ids = as_ids(allowed)
            if len(allowed_ids) == 0:
                return []
            selector, _bitmap = id_selector(allowed_ids)
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
            scores, labels = self._index.search(q, min(k, n, len(allowed_ids)), params=params)
        return [(int(i), float(s)) for i, s in zip(labels[0], scores[0], strict=True) if i != -1]
