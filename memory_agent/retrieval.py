"""Hybrid retrieval: FAISS (dense) and SQLite FTS5 BM25 (sparse), fused by reciprocal-rank fusion.

Both retrievers search only inside the time window and filters, which the store applies in SQL: the
dense search is restricted to the ids SQLite selects (a FAISS ``IDSelector``), the sparse one carries
the same ``WHERE`` clause. No top-k is post-filtered, so a narrow window never comes back empty while
matching events exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from memory_agent.models import Filters, TimeWindow


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved event: its SQLite id and fused score (higher is better)."""

    id: int
    score: float


class DenseIndex(Protocol):
    async def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]: ...


class SparseStore(Protocol):
    async def candidate_ids(self, window: TimeWindow | None, filters: Filters) -> np.ndarray | None: ...

    async def fts_search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int
    ) -> list[tuple[int, float]]: ...


class QueryEmbedder(Protocol):
    async def embed_query(self, text: str) -> np.ndarray: ...


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Fuse ranked id lists: ``score(d) = sum_i w_i / (k + rank_i(d))`` with ranks from 1.

    Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank
    learning methods", SIGIR 2009 (k = 60 there). Ties keep the order of first appearance.
    """
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(id=doc, score=score) for doc, score in ordered]


class HybridRetriever:
    """Dense + BM25 search within a window and filters; ``candidates`` hits from each, fused by RRF."""

    def __init__(
        self,
        store: SparseStore,
        index: DenseIndex,
        embedder: QueryEmbedder,
        *,
        rrf_k: int = 60,
        candidates: int = 100,
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._rrf_k = rrf_k
        self._candidates = candidates

    async def search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int
    ) -> list[Hit]:
        """The ``limit`` best events for ``text`` inside ``window`` and ``filters``, best first."""
        allowed = await self._store.candidate_ids(window, filters)
        if allowed is not None and len(allowed) == 0:
            return []
        depth = max(self._candidates, limit)
        query = await self._embedder.embed_query(text)
        dense = await self._index.search(query, depth, allowed)
        sparse = await self._store.fts_search(text, window, filters, limit=depth)
        fused = reciprocal_rank_fusion(
            [[doc for doc, _ in dense], [doc for doc, _ in sparse]], k=self._rrf_k
        )
        return fused[:limit]
