"""Hybrid retrieval: FAISS (dense) and SQLite FTS5 BM25 (sparse), fused, then spread to trace neighbours.

Both retrievers search only inside the time window and filters, whose ids the store selects
(:meth:`EventStore.candidate_ids`): the dense search is restricted to them (a FAISS ``IDSelector``, or
exact scoring when they are few), the sparse one ranks only matches among them. No top-k is
post-filtered, so a narrow window never comes back empty while matching events exist. The question is
embedded while BM25 runs, and FAISS searches as soon as the embedding is there.

Three steps, each a ``[retrieval]`` key:

1. **Fusion** (``fusion``, ``dense_weight``, ``coverage_power``). ``"calibrated"`` (default) adds two
   scores that mean the same thing for every question, so that a weak side cannot outvote a strong one
   and a floor on the sum (``min_score``) says "nothing relevant":

   * dense: the cosine similarity itself (not min-max normalised: a best hit at cosine 0.3 stays weak);
   * lexical: the BM25 score divided by its upper bound for the question, the sum of the IDFs of its
     searched phrases (the per-term bound of MaxScore, Turtle and Flood, "Query evaluation: strategies
     and optimizations", IP&M 31(6), 1995), capped at 1, times the share of the question's phrases the
     event holds raised to ``coverage_power`` (the coordination factor of Lucene's classic TF-IDF
     similarity). A phrase no event holds still counts in both, so one incidental shared word in a
     question worded otherwise (a paraphrase) scores low, while a question sharing most of its rare words
     with a report scores near 1.

   ``score = dense_weight * cosine + (1 - dense_weight) * lexical``: the convex combination of Bruch,
   Gai and Ingber ("An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 42(1), 2023) over
   these bounded scores (their "theoretical min-max" normalisation, with the bounds known per question
   instead of observed). ``"convex"`` is the same combination of min-max normalised scores, as those
   authors study it; ``"rrf"`` is reciprocal-rank fusion (Cormack et al., SIGIR 2009) with weights
   ``2 * dense_weight`` and ``2 * (1 - dense_weight)``, so 0.5 is plain RRF. The defaults were chosen on
   two labelled sets of different character, LoCoMo and the generated ops set (docs/benchmarks.md).
2. **Local context** (``context_window``, ``context_weight``): a report is often understood only with
   the reports next to it on its trace (the question before an answer, the anomaly before a rollback).
   Each fused hit passes ``context_weight * score / distance`` to the up to ``context_window`` events
   before and after it on the same trace (ordered by ``occurred_at``, then id), and every event keeps
   the largest share it is given on top of its own score. Events outside the window and filters get
   nothing. This is the local-context idea of sentence retrieval (Fernández, Losada and Azzopardi,
   "Extending the language modeling framework for sentence retrieval to include local context",
   Information Retrieval 14(4), 2011; Doko et al., IP&M 49(6), 2013) applied at query time, so stored
   events and their embeddings do not change. Only hits at or above ``min_score`` lend (at most
   ``max(2 * limit, 20)`` of them): a weak hit does not promote its neighbours.
3. The ``limit`` best are returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from memory_agent.errors import InvalidArgument
from memory_agent.store.filter_columns import in_sorted
from memory_agent.types import Filters, TimeWindow

if TYPE_CHECKING:
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.store.events import EventStore
    from memory_agent.store.lexical import LexicalHits

__all__ = [
    "FUSIONS",
    "Fusion",
    "Hit",
    "HybridRetriever",
    "calibrated_fusion",
    "convex_fusion",
    "reciprocal_rank_fusion",
    "spread_to_neighbours",
]

log = logging.getLogger(__name__)

Fusion = Literal["calibrated", "convex", "rrf"]
"""How the dense and sparse rankings are fused (see the module docstring)."""
FUSIONS: tuple[Fusion, ...] = ("calibrated", "convex", "rrf")

MAX_CONTEXT_WINDOW = 5


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved event: its SQLite id and fused score (higher is better)."""

    id: int
    score: float


def _scored_by_cosine(limit: int) -> int:
    """How many of the best BM25 hits calibrated fusion scores by their exact cosine when the dense side
    missed them, for a search of ``limit`` hits."""
    return max(limit, 20)


@dataclass(frozen=True, slots=True)
class _Lexical:
    """The BM25 side of one search: its ``hits``, and the stored vectors of some of them read beside it:
    ``read_for`` the ids asked for (``None``: none read), ``vectors`` what :meth:`EventStore.vectors` gave
    for them (``(ids (m,) int64 ascending, (m, dim) float32)``)."""

    hits: LexicalHits
    read_for: np.ndarray | None = None
    vectors: tuple[np.ndarray, np.ndarray] | None = None

    async def vectors_of(self, ids: Sequence[int], store: EventStore) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of ``ids``, exactly as ``store.vectors(ids)`` gives them: taken from those read
        beside the hits when they were read for every one of ``ids``, else read now."""
        wanted = np.asarray(ids, dtype=np.int64)
        if self.read_for is None or self.vectors is None or not np.isin(wanted, self.read_for).all():
            return await store.vectors(wanted)
        found, matrix = self.vectors
        keep = np.isin(found, wanted)
        return found[keep], matrix[keep]


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


def calibrated_fusion(
    dense: Sequence[tuple[int, float]], lexical: LexicalHits, *, dense_weight: float, coverage_power: float
) -> list[Hit]:
    """Fuse ``dense`` ``(id, cosine)`` hits and BM25 ``lexical`` hits on bounded scores, best first.

    ``score(d) = dense_weight * max(cos(d), 0) + (1 - dense_weight) * min(bm25(d) / B, 1) * (m(d) / n) **
    coverage_power`` with ``B`` the sum of the IDFs of the question's ``n`` searched phrases and ``m(d)``
    how many of them ``d`` holds (:class:`memory_agent.store.lexical.LexicalHits`); an id missing from a
    side gets 0 from it. Every score is within 0..1 whatever the question; sources in the module
    docstring. Ties keep the order of first appearance (dense first).
    """
    scores: dict[int, float] = {doc: dense_weight * max(cos, 0.0) for doc, cos in dense}
    if lexical.hits and lexical.bound > 0 and lexical.phrases > 0:
        for doc, bm25 in lexical.hits:
            share = lexical.matched.get(doc, 1) / lexical.phrases
            lex = min(bm25 / lexical.bound, 1.0) * share**coverage_power
            scores[doc] = scores.get(doc, 0.0) + (1.0 - dense_weight) * lex
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
        keys = list(bonus)
        bonus = {k: bonus[k] for k, ok in zip(keys, in_sorted(keys, allowed), strict=True) if ok}
    scores = dict(own)
    for doc, share in bonus.items():
        scores[doc] = scores.get(doc, 0.0) + weight * share
    ordered = sorted(scores.items(), key=lambda item: -item[1])
    return [Hit(id=doc, score=score) for doc, score in ordered]


class HybridRetriever:
    """Dense + BM25 search within a window and filters, fused and spread to trace neighbours.

    ``candidates`` hits come from each retriever; ``fusion``, ``dense_weight`` and ``coverage_power`` say
    how they are combined; ``context_window`` events on each side of a hit on its trace (0 = off, at most
    5) get ``context_weight`` of its score; ``min_score`` is the relevance floor below which a hit lends
    nothing to its neighbours (the answerer does not present such hits either). See the module docstring
    for each step and its source. Without an ``index`` and ``embedder`` (the model has not loaded: the
    daemon runs degraded), or when the query cannot be embedded, the dense side is empty and BM25 alone
    ranks; :meth:`attach` adds them. Raises ``InvalidArgument`` (a ``ValueError``) for a setting out of
    range.
    """

    def __init__(
        self,
        store: EventStore,
        index: AsyncIndex | None,
        embedder: BatchingEmbedder | None,
        *,
        rrf_k: int = 60,
        candidates: int = 100,
        fusion: Fusion = "calibrated",
        dense_weight: float = 0.3,
        coverage_power: float = 2.0,
        context_window: int = 2,
        context_weight: float = 0.3,
        min_score: float = 0.0,
    ) -> None:
        if fusion not in FUSIONS:
            raise InvalidArgument("fusion", f"must be one of {', '.join(map(repr, FUSIONS))}, not {fusion!r}")
        if not 0.0 <= dense_weight <= 1.0:
            raise InvalidArgument("dense_weight", f"must be within 0..1, not {dense_weight}")
        if not 0 <= context_window <= MAX_CONTEXT_WINDOW:
            raise InvalidArgument("context_window", f"must be within 0..{MAX_CONTEXT_WINDOW}, not {context_window}")
        if context_weight < 0:
            raise InvalidArgument("context_weight", f"must be >= 0, not {context_weight}")
        if coverage_power < 0:
            raise InvalidArgument("coverage_power", f"must be >= 0, not {coverage_power}")
        self._store = store
        self._index = index
        self._embedder = embedder
        self._rrf_k = rrf_k
        self.candidates = candidates
        self._fusion: Fusion = fusion
        self._dense_weight = dense_weight
        self._coverage_power = coverage_power
        self._context_window = context_window
        self._context_weight = context_weight
        self.min_score = min_score

    def attach(self, index: AsyncIndex, embedder: BatchingEmbedder) -> None:
        """Use ``index`` and ``embedder`` for the dense side from now on (the model loaded)."""
        self._index, self._embedder = index, embedder

    async def embed(self, text: str) -> np.ndarray | None:
        """The query embedding of ``text``, ``(dim,)`` float32, L2-normalised; ``None`` without a model or
        when embedding fails (logged)."""
        return await self._query_vector(text)

    async def _query_vector(self, text: str) -> np.ndarray | None:
        if self._embedder is None:
            return None
        try:
            return await self._embedder.embed_query(text)
        except Exception as exc:  # the model failing must not fail the question: BM25 still answers
            log.warning("query embedding failed (%s: %s); ranking by BM25 alone", type(exc).__name__, exc)
            return None

    async def _dense(self, query: np.ndarray | None, depth: int, allowed: np.ndarray | None) -> list[tuple[int, float]]:
        if query is None or self._index is None:
            return []
        return await self._index.search(query, depth, allowed)

    async def _hybrid(
        self, query: asyncio.Future[np.ndarray | None], words: str, window: TimeWindow | None, filters: Filters,
        allowed: np.ndarray | None, *, depth: int, limit: int,
    ) -> list[Hit]:
        """One search inside ``window`` and ``filters`` (whose ids are ``allowed``), fused: BM25 and the stored
        vectors of its best hits (SQLite's thread) while ``query`` is embedded (the model's thread), FAISS (its
        own thread) as soon as it is, neither side waiting for the other."""

        async def dense() -> list[tuple[int, float]]:
            return await self._dense(await query, depth, allowed)

        dense_hits, lexical = await asyncio.gather(
            dense(), self._lexical(words, window, filters, allowed, depth=depth, limit=limit))
        return await self._fuse(await query, dense_hits, lexical, limit=limit)

    async def _lexical(
        self, words: str, window: TimeWindow | None, filters: Filters, allowed: np.ndarray | None, *, depth: int,
        limit: int,
    ) -> _Lexical:
        """The BM25 side of :meth:`_hybrid`, with the stored vectors of the hits :meth:`_fuse` scores by cosine
        when the dense side missed them (read now, before the dense side says which it missed)."""
        hits = await self._store.lexical_search(words, window, filters, limit=depth, allowed=allowed)
        if self._fusion != "calibrated" or self._dense_weight <= 0 or self._embedder is None or not hits.hits:
            return _Lexical(hits)
        best = np.fromiter((doc for doc, _ in hits.hits[: _scored_by_cosine(limit)]), dtype=np.int64)
        return _Lexical(hits, best, await self._store.vectors(best))

    async def search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int, words: str | None = None
    ) -> list[Hit]:
        """The ``limit`` best events for ``text`` inside ``window`` and ``filters``, best first.

        ``words``: what the BM25 side searches, when not ``text`` (the answerer leaves out the names it
        turned into filters: every candidate holds them already, so they would only favour reports that
        repeat them).

        With local context on and an event-type or sender filter, the reports that lend context are also
        searched without those two filters (a rollback is explained by the anomaly before it, an answer
        by the question before it, whoever reported them); only events passing every filter are returned.
        """
        depth = max(self.candidates, limit)
        context = self._context_window > 0 and self._context_weight > 0
        wide = replace(filters, event=(), from_handle=())
        widen = context and wide != filters and self._fusion == "calibrated"
        searched = text if words is None else words
        # The question is embedded (the model's thread) while the window's ids are selected and BM25 runs;
        # one embedding serves both searches.
        query = asyncio.ensure_future(self._query_vector(text))
        try:
            allowed = await self._store.candidate_ids(window, filters)
            if allowed is not None and len(allowed) == 0:
                return []
            narrow = self._hybrid(query, searched, window, filters, allowed, depth=depth, limit=limit)
            if widen:

                async def wider() -> list[Hit]:
                    around = await self._store.candidate_ids(window, wide)
                    return await self._hybrid(query, searched, window, wide, around, depth=depth, limit=limit)

                # The wider search runs beside the narrow one; its hits count only if the narrow one has some.
                fused, wide_fused = await asyncio.gather(narrow, wider())
            else:
                fused = await narrow
        finally:
            query.cancel()  # a no-op once embedded; otherwise nothing waits for it any more
        if not context or not fused:
            return fused[:limit]
        receivers = allowed
        if widen:
            # Calibrated scores mean the same in both searches, so the two lists merge by id.
            merged = {h.id: h.score for h in wide_fused}
            merged.update((h.id, h.score) for h in fused)
            fused = [Hit(doc, score) for doc, score in sorted(merged.items(), key=lambda item: -item[1])]
        lenders = [h.id for h in fused[: max(2 * limit, 20)] if h.score >= self.min_score]
        if lenders:
            neighbours = await self._store.trace_neighbours(lenders, width=self._context_window)
            fused = spread_to_neighbours(fused, neighbours, weight=self._context_weight, allowed=receivers)
        if widen and receivers is not None:
            fused = [h for h, ok in zip(fused, in_sorted([h.id for h in fused], receivers), strict=True) if ok]
        return fused[:limit]

    async def _fuse(
        self, query: np.ndarray | None, dense: list[tuple[int, float]], side: _Lexical, *, limit: int
    ) -> list[Hit]:
        w = self._dense_weight
        lexical = side.hits
        sparse = lexical.hits
        if self._fusion == "convex":
            return convex_fusion([dense, sparse], [w, 1.0 - w])
        if self._fusion == "rrf":
            return reciprocal_rank_fusion(
                [[doc for doc, _ in dense], [doc for doc, _ in sparse]], k=self._rrf_k,
                weights=[2.0 * w, 2.0 * (1.0 - w)],
            )
        # The best BM25 hits outside the dense list get their exact cosine (their rows are few).
        seen = {doc for doc, _ in dense}
        missing = [doc for doc, _ in sparse[: _scored_by_cosine(limit)] if doc not in seen]
        if missing and w > 0 and query is not None:
            found, vectors = await side.vectors_of(missing, self._store)
            if len(found):
                cosines = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
                dense = [*dense, *zip(found.tolist(), cosines.tolist(), strict=True)]
        return calibrated_fusion(dense, lexical, dense_weight=w, coverage_power=self._coverage_power)
