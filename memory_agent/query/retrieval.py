"""Hybrid retrieval: FAISS (dense) and SQLite FTS5 BM25 (sparse), fused, then spread to trace neighbours.

Both retrievers search only inside the time window and filters, which the store applies in SQL: the
dense search is restricted to the ids SQLite selects (a FAISS ``IDSelector``), the sparse one carries
the same ``WHERE`` clause. No top-k is post-filtered, so a narrow window never comes back empty while
matching events exist.

Three steps, each a ``[retrieval]`` key:

1. **Fusion** (``fusion``, ``dense_weight``): ``"convex"`` (default) adds the min-max normalised scores of
   the two retrievers, weighted ``dense_weight`` and ``1 - dense_weight`` (Bruch, Gai and Ingber, "An
   Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 42(1), 2023, who find it better than
   RRF in and out of domain); ``"rrf"`` is reciprocal-rank fusion (Cormack et al., SIGIR 2009) with
   weights ``2 * dense_weight`` and ``2 * (1 - dense_weight)``, so 0.5 is plain RRF.
2. **Local context** (``context_window``, ``context_weight``): a report is often understood only with
   the reports next to it on its trace (the question before an answer, the anomaly before a rollback).
   Each fused hit passes ``context_weight * score / distance`` to the up to ``context_window`` events
   before and after it on the same trace (ordered by ``occurred_at``, then id), and every event keeps
   the largest share it is given on top of its own score. Events outside the window and filters get
   nothing. This is the local-context idea of sentence retrieval (Fernández, Losada and Azzopardi,
   "Extending the language modeling framework for sentence retrieval to include local context",
   Information Retrieval 14(4), 2011; Doko et al., IP&M 49(6), 2013) applied at query time, so stored
   events and their embeddings do not change.
3. The ``limit`` best are returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from memory_agent.errors import InvalidArgument
from memory_agent.types import Filters, TimeWindow

if TYPE_CHECKING:
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.store.events import EventStore

__all__ = [
    "Fusion",
    "Hit",
    "HybridRetriever",
    "convex_fusion",
    "reciprocal_rank_fusion",
    "spread_to_neighbours",
]

log = logging.getLogger(__name__)

Fusion = Literal["convex", "rrf"]
"""How the dense and sparse rankings are fused: convex combination of scores, or reciprocal-rank fusion."""

MAX_CONTEXT_WINDOW = 5


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved event: its SQLite id and fused score (higher is better)."""

    id: int
    score: float


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Fuse ranked id lists: ``score(d) = sum_i w_i / (k + rank_i(d))`` with ranks from 1.

    Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank
    learning methods", SIGIR 2009 (k = 60 there). Ties keep the order of first appearance.
    Raises ``InvalidArgument`` (a ``ValueError``) when the number of weights differs from the number of rankings.
    """
    weights = weights or [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise InvalidArgument("weights", f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(id=doc, score=score) for doc, score in ordered]


def convex_fusion(results: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]) -> list[Hit]:
    """Fuse scored lists: ``score(d) = sum_i w_i * (s_i(d) - min_i) / (max_i - min_i)``, best first.

    Each list is ``(id, score)`` with higher scores better (cosine similarity, ``-bm25()``); it is min-max
    normalised over its own entries (all equal scores count 1), and an id missing from a list gets 0
    from it. Bruch, Gai and Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS
    42(1), 2023. Ties keep the order of first appearance. Raises ``InvalidArgument`` (a ``ValueError``) when the number of
    weights differs from the number of lists.
    """
    if len(weights) != len(results):
        raise InvalidArgument("weights", f"{len(weights)} weights for {len(results)} result lists")
    scores: dict[int, float] = {}
    for result, weight in zip(results, weights, strict=True):
        if not result:
            continue
        values = [score for _, score in result]
        low, high = min(values), max(values)
        span = high - low
        for doc, score in result:
            share = (score - low) / span if span > 0 else 1.0
            scores[doc] = scores.get(doc, 0.0) + weight * share
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(id=doc, score=score) for doc, score in ordered]


def spread_to_neighbours(
    hits: Sequence[Hit],
    neighbours: Mapping[int, Sequence[tuple[int, int]]],
    *,
    weight: float,
    allowed: np.ndarray | None = None,
) -> list[Hit]:
    """Add to every event ``weight`` times the largest ``score / distance`` of a hit it neighbours.

    ``neighbours`` maps a hit's id to ``(neighbour id, distance)`` pairs (distance 1 = adjacent on the
    trace); ``allowed`` (ascending int64 ids, ``None`` = any) limits who may receive a share, so events
    outside the window and filters never appear. Events that were not hits enter with their share
    alone. Returns every scored event, best first (ties by first appearance: hits, then neighbours in
    the order given). See the module docstring for the source of the method.
    """
    own = {h.id: h.score for h in hits}
    bonus: dict[int, float] = {}
    for hit in hits:
        if hit.score <= 0:
            continue
        for neighbour, distance in neighbours.get(hit.id, ()):
            share = hit.score / max(distance, 1)
            if share > bonus.get(neighbour, 0.0):
                bonus[neighbour] = share
    if allowed is not None and bonus:
        keys = np.fromiter(bonus, dtype=np.int64, count=len(bonus))
        at = np.minimum(np.searchsorted(allowed, keys), max(len(allowed) - 1, 0))
        inside = (allowed[at] == keys) if len(allowed) else np.zeros(len(keys), dtype=bool)
        bonus = {int(k): bonus[int(k)] for k, ok in zip(keys, inside, strict=True) if ok}
    scores = dict(own)
    for doc, share in bonus.items():
        scores[doc] = scores.get(doc, 0.0) + weight * share
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(id=doc, score=score) for doc, score in ordered]


class HybridRetriever:
    """Dense + BM25 search within a window and filters, fused and spread to trace neighbours.

    ``candidates`` hits come from each retriever; ``fusion`` and ``dense_weight`` say how they are
    combined; ``context_window`` events on each side of a hit on its trace (0 = off, at most 5) get
    ``context_weight`` of its score. See the module docstring for each step and its source.
    Without an ``index`` and ``embedder`` (the model has not loaded: the daemon runs degraded), or when
    the query cannot be embedded, the dense side is empty and BM25 alone ranks; :meth:`attach` adds them.
    Raises ``InvalidArgument`` (a ``ValueError``) for a setting out of range.
    """

    def __init__(
        self,
        store: EventStore,
        index: AsyncIndex | None,
        embedder: BatchingEmbedder | None,
        *,
        rrf_k: int = 60,
        candidates: int = 100,
        fusion: Fusion = "convex",
        dense_weight: float = 0.3,
        context_window: int = 1,
        context_weight: float = 0.5,
    ) -> None:
        if fusion not in ("convex", "rrf"):
            raise InvalidArgument("fusion", f"must be 'convex' or 'rrf', not {fusion!r}")
        if not 0.0 <= dense_weight <= 1.0:
            raise InvalidArgument("dense_weight", f"must be within 0..1, not {dense_weight}")
        if not 0 <= context_window <= MAX_CONTEXT_WINDOW:
            raise InvalidArgument("context_window", f"must be within 0..{MAX_CONTEXT_WINDOW}, not {context_window}")
        if context_weight < 0:
            raise InvalidArgument("context_weight", f"must be >= 0, not {context_weight}")
        self._store = store
        self._index = index
        self._embedder = embedder
        self._rrf_k = rrf_k
        self._candidates = candidates
        self._fusion: Fusion = fusion
        self._dense_weight = dense_weight
        self._context_window = context_window
        self._context_weight = context_weight

    def attach(self, index: AsyncIndex, embedder: BatchingEmbedder) -> None:
        """Use ``index`` and ``embedder`` for the dense side from now on (the model loaded)."""
        self._index, self._embedder = index, embedder

    async def _query_vector(self, text: str) -> np.ndarray | None:
        if self._embedder is None:
            return None
        try:
            return await self._embedder.embed_query(text)
        except Exception as exc:  # the model failing must not fail the question: BM25 still answers
            log.warning("query embedding failed (%s: %s); ranking by BM25 alone", type(exc).__name__, exc)
            return None

    async def search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int
    ) -> list[Hit]:
        """The ``limit`` best events for ``text`` inside ``window`` and ``filters``, best first."""
        allowed = await self._store.candidate_ids(window, filters)
        if allowed is not None and len(allowed) == 0:
            return []
        depth = max(self._candidates, limit)
        # The query embedding (model thread) overlaps the BM25 search (SQLite thread).
        query, sparse = await asyncio.gather(
            self._query_vector(text), self._store.fts_search(text, window, filters, limit=depth)
        )
        dense = [] if query is None or self._index is None else await self._index.search(query, depth, allowed)
        w = self._dense_weight
        if self._fusion == "convex":
            fused = convex_fusion([dense, sparse], [w, 1.0 - w])
        else:
            fused = reciprocal_rank_fusion(
                [[doc for doc, _ in dense], [doc for doc, _ in sparse]], k=self._rrf_k,
                weights=[2.0 * w, 2.0 * (1.0 - w)],
            )
        if self._context_window > 0 and self._context_weight > 0 and fused:
            neighbours = await self._store.trace_neighbours([h.id for h in fused], width=self._context_window)
            fused = spread_to_neighbours(fused, neighbours, weight=self._context_weight, allowed=allowed)
        return fused[:limit]
