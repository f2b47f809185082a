"""Kind ``"ivf"``: inverted lists over 8-bit scalar-quantised codes, approximate, a quarter of flat's memory.

``IndexIVFScalarQuantizer`` (inverted lists over a flat inner-product quantizer, vectors stored as 8-bit
codes: 1 byte per dimension) with a hash-table direct map, so ids can be removed and reconstructed.
Search probes ``nprobe`` of ``nlist`` lists, so it is approximate;
:class:`memory_agent.index.async_index.AsyncIndex` re-scores its candidates from the float32 vectors in
SQLite.

Why IVF rather than HNSW above the threshold: FAISS's HNSW cannot remove ids (``remove_ids`` is not
implemented for ``IndexHNSW``), and deletion (``forget``, retention) must work; building HNSW over a
million 384-dimensional vectors takes many minutes on two cores, where IVF trains on a sample in seconds;
and IVF with SQ8 codes needs ~0.4 GB per million 384-dimensional vectors where HNSW keeps its graph
(``2 * M`` neighbour ids per vector on level 0) on top of its storage. Measurements:
docs/benchmarks.md, "Query latency at scale".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from memory_agent.index.base import BaseIndex, as_ids, id_selector

__all__ = ["MIN_POINTS_PER_LIST", "IVFIndex", "auto_nlist"]

# FAISS's k-means warns below 39 training points per centroid (faiss/Clustering.cpp).
MIN_POINTS_PER_LIST = 39
# A restriction allowing at least this fraction of the vectors is applied after an unrestricted search.
POST_FILTER_FRACTION = 0.2
# A restricted IVF search probes at most this many times nprobe lists.
MAX_NPROBE_FACTOR = 4
# An IVF direct map kept as a hash table: ids can be removed (with an IDSelectorArray) and reconstructed.
_HASHTABLE = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]


def auto_nlist(count: int) -> int:
    """Inverted lists for an IVF index over ``count`` vectors: the power of two nearest ``sqrt(count)``,
    lowered until every list has at least 39 training points (FAISS's k-means minimum), at least 1.

    The FAISS wiki ("Guidelines to choose an index") suggests 4*sqrt(N) to 16*sqrt(N) lists for the best
    speed at a given recall on many-core machines; k-means training costs grow with the square of the
    list count (FAISS samples 39 to 256 points per list), and on two cores training 4 times sqrt(N) lists
    at a million vectors takes over ten times as long as sqrt(N), while scanning nprobe/nlist of the 8-bit
    codes stays near a millisecond either way, below the query embedding
    (docs/benchmarks.md#design-ivf). Hence sqrt(N).
    """
    if count <= 0:
        return 1
    nlist = 1 << max(0, round(math.log2(math.sqrt(count))))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > count:
        nlist //= 2
    return min(nlist, 1 << 16)



class IVFIndex(BaseIndex):
    """Kind ``"ivf"``: ``IndexIVFScalarQuantizer`` (8-bit codes, inner product) with a hash-table direct
    map; ids are SQLite event ids. Approximate: see the module docstring.

    Build with :meth:`trained` (k-means on a sample, spherical since vectors are normalised), then
    :meth:`add`. ``nprobe`` lists are probed per unrestricted search; a search restricted to ``m`` of
    ``n`` ids probes up to ``4 * nprobe`` lists (:meth:`nprobe_for`). A narrow restriction is not
    searched here but scored exactly by :class:`memory_agent.index.async_index.AsyncIndex`. Blocking: use from one
    thread.
    """

    kind = "ivf"
    exact = False

    def __init__(self, index: Any, *, model: str = "", nprobe: int = 16) -> None:
        if not isinstance(index, faiss.IndexIVFScalarQuantizer):
            raise TypeError(f"IVFIndex wraps an IndexIVFScalarQuantizer, got {type(index).__name__}")
        if index.direct_map.type != _HASHTABLE:
            index.set_direct_map_type(_HASHTABLE)
        super().__init__(index, model=model)
        self.nprobe = max(1, int(nprobe))

    @classmethod
    def trained(cls, sample: np.ndarray, *, nlist: int, model: str = "", nprobe: int = 16) -> IVFIndex:
        """An empty index whose ``nlist`` centroids are trained (spherical k-means) on ``sample``
        ((s, dim) float32, normalised). Raises ``ValueError`` when the sample has fewer rows than lists."""
        matrix = np.ascontiguousarray(sample, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) < nlist or nlist < 1:
            raise ValueError(f"training {nlist} lists needs at least {nlist} sample vectors, got {matrix.shape}")
        dim = int(matrix.shape[1])
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, int(nlist), faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.spherical = True
        index.train(matrix)
        return cls(index, model=model, nprobe=nprobe)

    @property
    def nlist(self) -> int:
        """Inverted lists."""
        return int(self._index.nlist)

    def clone(self) -> IVFIndex:
        """An independent copy, direct map included (see :meth:`BaseIndex.clone`)."""
        return IVFIndex(faiss.clone_index(self._index), model=self.model, nprobe=self.nprobe)

    def ids(self) -> np.ndarray:
        """All ids held, (n,) int64, list by list (not in insertion order)."""
        invlists = self._index.invlists
        parts = [np.zeros(0, dtype=np.int64)]
        for lst in range(self.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).astype(np.int64, copy=True))
        return np.concatenate(parts)

    def remove(self, ids: np.ndarray | Sequence[int]) -> int:
        """Remove ``ids`` (absent ones are ignored) through the direct map; returns how many were removed."""
        id_array = as_ids(ids)
        if len(id_array) == 0 or len(self) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorArray(id_array)))

    def nprobe_for(self, allowed: int | None) -> int:
        """Lists probed by a search restricted to ``allowed`` ids (``None``: unrestricted): ``nprobe * n /
        allowed``, so about as many allowed vectors are scanned as an unrestricted search scans vectors,
        at most ``4 * nprobe`` lists (every probed list costs a selector test per vector,
        docs/benchmarks.md#design-ivf) and at most all lists."""
        n = len(self)
        if allowed is None or allowed >= n:
            return min(self.nprobe, self.nlist)
        scaled = math.ceil(self.nprobe * n / max(allowed, 1))
        return min(self.nlist, MAX_NPROBE_FACTOR * self.nprobe, max(self.nprobe, scaled))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Approximate top ``k`` ``(id, score)``, best first; scores are inner products with the 8-bit codes.

        ``allowed`` ((m,) int64) restricts the search to those ids (an ``IDSelectorBitmap`` inside the
        scan, with more lists probed the narrower it is; see the class docstring); ``None`` means all ids,
        an empty array means none.
        """
        q = self._query(query)
        n = len(self)
        if k <= 0 or n == 0:
            return []
        if allowed is not None and len(allowed) >= POST_FILTER_FRACTION * n:
            hits = self._post_filtered(q, k, as_ids(allowed))
            if hits is not None:
                return hits
        params = faiss.SearchParametersIVF()
        bitmap = None
        if allowed is None:
            params.nprobe = self.nprobe_for(None)
            kk = min(k, n)
        else:
            allowed_ids = as_ids(allowed)
            if len(allowed_ids) == 0:
                return []
            selector, bitmap = id_selector(allowed_ids)
            params.sel = selector
            params.nprobe = self.nprobe_for(len(allowed_ids))
            kk = min(k, n, len(allowed_ids))
        scores, labels = self._index.search(q, kk, params=params)
        del bitmap  # kept alive through the search above
        return [(int(i), float(s)) for i, s in zip(labels[0], scores[0], strict=True) if i != -1]

    def _post_filtered(self, q: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]] | None:
        """A broad restriction: an unrestricted search for ``1.5 * k * n / m`` hits, keeping the allowed
        ones; ``None`` when fewer than ``k`` survive (then the selector search runs). FAISS scans codes
        without a selector several times faster (docs/benchmarks.md#design-ivf)."""
        n = len(self)
        wanted = min(n, math.ceil(1.5 * k * n / len(allowed)))
        params = faiss.SearchParametersIVF()
        params.nprobe = self.nprobe_for(None)
        scores, labels = self._index.search(q, wanted, params=params)
        ordered = allowed if np.all(allowed[1:] >= allowed[:-1]) else np.sort(allowed)
        found = labels[0]
        pos = np.minimum(np.searchsorted(ordered, found), len(ordered) - 1)
        keep = (found != -1) & (ordered[pos] == found)
        if int(keep.sum()) < min(k, len(allowed)) and wanted < n:
            return None
        return [(int(i), float(s)) for i, s in zip(found[keep][:k], scores[0][keep][:k], strict=True)]
