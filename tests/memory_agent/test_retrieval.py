"""Reciprocal-rank fusion, and hybrid search inside windows and filters on a real store and FAISS index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.flat import FlatIndex
from memory_agent.query.retrieval import (
    Hit,
    HybridRetriever,
    _Lexical,
    convex_fusion,
    reciprocal_rank_fusion,
    spread_to_neighbours,
)
from memory_agent.store.events import EventStore
from memory_agent.types import Filters, NewEvent, TimeWindow


def test_rrf_rewards_agreement_and_uses_k() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert [h.id for h in fused] == [1, 3, 2, 4]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[-1].score == pytest.approx(1 / 63)


def test_rrf_weights() -> None:
    fused = reciprocal_rank_fusion([[1], [2]], k=1, weights=[1.0, 3.0])
    assert [h.id for h in fused] == [2, 1]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[1.0, 2.0])


TEXTS = [
    ("rollback", "api-gateway", 100.0, "rollback of api-gateway after error rate spike"),
    ("rollback", "billing", 200.0, "rollback of billing after failed migration"),
    ("flaky_test", None, 300.0, "test_login flaky on ci"),
    ("anomaly", "api-gateway", 400.0, "latency anomaly on api-gateway p99"),
]


@pytest.fixture
async def retriever(tmp_path: Path):  # type: ignore[no-untyped-def]
    embedder = HashingEmbedder(dim=64)
    store = await EventStore.open(tmp_path / "m.sqlite3")
    events = [
        NewEvent(message_id=f"m{i}", session=f"s{i}", from_handle="deploy", trace_id=f"t{i}", event=ev,
                 service=svc, occurred_at=at, received_at=at, payload={"event": ev, "text": text}, text=text)
        for i, (ev, svc, at, text) in enumerate(TEXTS)
    ]
    vectors = embedder.encode([e.text for e in events])
    results = await store.insert(events, vectors, model=embedder.name)
    index = FlatIndex(embedder.dim, model=embedder.name)
    index.add(np.array([r.id for r in results], dtype=np.int64), vectors)
    batcher = BatchingEmbedder(embedder)
    aindex = AsyncIndex(index)
    yield HybridRetriever(store, aindex, batcher, candidates=10), [r.id for r in results]
    await batcher.close()
    await aindex.close()
    await store.close()


async def test_hybrid_search_ranks_the_matching_event_first(retriever) -> None:  # type: ignore[no-untyped-def]
    r, ids = retriever
    hits = await r.search("billing migration rollback", None, Filters(), limit=4)
    assert hits[0].id == ids[1]


async def test_search_stays_inside_window_and_filters(retriever) -> None:  # type: ignore[no-untyped-def]
    r, ids = retriever
    hits = await r.search("rollback", TimeWindow(since=150, until=1000), Filters(), limit=10)
    assert ids[0] not in {h.id for h in hits}
    assert hits[0].id == ids[1]
    hits = await r.search("api-gateway", None, Filters(event=("anomaly",)), limit=10)
    assert [h.id for h in hits] == [ids[3]]
    assert await r.search("rollback", TimeWindow(since=5000), Filters(), limit=10) == []


# --- convex fusion and local context -------------------------------------------------------------------


def test_convex_fusion_min_max_normalises_each_list_and_weights_them() -> None:
    fused = convex_fusion([[(1, 0.9), (2, 0.5), (3, 0.1)], [(3, 12.0), (4, 2.0)]], [0.3, 0.7])
    scores = {h.id: h.score for h in fused}
    assert scores[1] == pytest.approx(0.3 * 1.0)
    assert scores[2] == pytest.approx(0.3 * 0.5)
    assert scores[3] == pytest.approx(0.3 * 0.0 + 0.7 * 1.0)
    assert scores[4] == pytest.approx(0.0)  # the lowest of its list, absent from the other
    assert [h.id for h in fused] == [3, 1, 2, 4]


def test_convex_fusion_edge_cases() -> None:
    assert [(h.id, h.score) for h in convex_fusion([[(7, 0.4), (8, 0.4)], []], [0.5, 0.5])] == [(7, 0.5), (8, 0.5)]
    assert convex_fusion([[], []], [0.5, 0.5]) == []
    only_sparse = convex_fusion([[(1, 0.9)], [(2, 3.0), (1, 1.0)]], [0.0, 1.0])
    assert [h.id for h in only_sparse] == [2, 1]
    with pytest.raises(ValueError, match="1 weights for 2"):
        convex_fusion([[], []], [1.0])


def test_spread_gives_neighbours_a_share_by_distance_and_the_largest_wins() -> None:
    hits = [Hit(10, 1.0), Hit(20, 0.4), Hit(30, 0.0)]
    neighbours = {10: [(11, 1), (9, 1), (12, 2)], 20: [(11, 1), (21, 1)], 30: [(31, 1)]}
    spread = {h.id: h.score for h in spread_to_neighbours(hits, neighbours, weight=0.5)}
    assert spread[10] == pytest.approx(1.0)  # a hit keeps its own score
    assert spread[11] == pytest.approx(0.5 * 1.0)  # from 10 (1.0) rather than from 20 (0.4)
    assert spread[9] == pytest.approx(0.5)
    assert spread[12] == pytest.approx(0.5 * 1.0 / 2)
    assert spread[21] == pytest.approx(0.5 * 0.4)
    assert 31 not in spread  # a zero score has nothing to give
    inside = spread_to_neighbours(hits, neighbours, weight=0.5, allowed=np.array([9, 10, 20, 30], dtype=np.int64))
    assert {h.id for h in inside} == {9, 10, 20, 30}
    nothing_allowed = spread_to_neighbours(hits, neighbours, weight=0.5, allowed=np.array([], dtype=np.int64))
    assert {h.id for h in nothing_allowed} == {10, 20, 30}


# A conversation: the answer (#2) shares no word with the question; the turn before it does.
CHAT = [
    ("alice", "chat-1", 1000.0, "Which instrument are you learning these days?"),
    ("bob", "chat-1", 1000.0, "The cello, with lessons every Tuesday."),
    ("alice", "chat-1", 1000.0, "Lovely, I hope the neighbours agree."),
    ("bob", "chat-2", 1000.0, "Weekend plans: hiking with friends."),
    ("alice", "chat-2", 5000.0, "Hiking sounds great, where to?"),
]


@pytest.fixture
async def chat_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    embedder = HashingEmbedder(dim=64)
    store = await EventStore.open(tmp_path / "chat.sqlite3")
    events = [
        NewEvent(message_id=f"c{i}", session=f"s{i}", from_handle=who, trace_id=trace, event="utterance",
                 service=None, occurred_at=at, received_at=at, payload={"event": "utterance", "text": text},
                 text=text)
        for i, (who, trace, at, text) in enumerate(CHAT)
    ]
    vectors = embedder.encode([e.text for e in events])
    results = await store.insert(events, vectors, model=embedder.name)
    index = FlatIndex(embedder.dim, model=embedder.name)
    index.add(np.array([r.id for r in results], dtype=np.int64), vectors)
    batcher = BatchingEmbedder(embedder)
    aindex = AsyncIndex(index)
    yield store, aindex, batcher, [r.id for r in results]
    await batcher.close()
    await aindex.close()
    await store.close()


async def test_trace_neighbours_follow_time_then_id_within_the_trace(chat_store) -> None:  # type: ignore[no-untyped-def]
    store, _index, _batcher, ids = chat_store
    near = await store.trace_neighbours([ids[1], ids[3], ids[4], 999_999], width=2)
    assert near[ids[1]] == [(ids[0], 1), (ids[2], 1)]  # same occurred_at: ordered by id
    assert near[ids[3]] == [(ids[4], 1)]  # never across traces
    assert near[ids[4]] == [(ids[3], 1)]
    assert 999_999 not in near
    wide = await store.trace_neighbours([ids[0]], width=2)
    assert wide[ids[0]] == [(ids[1], 1), (ids[2], 2)]
    assert await store.trace_neighbours([ids[0]], width=0) == {}
    with pytest.raises(ValueError, match="width"):
        await store.trace_neighbours([ids[0]], width=-1)


async def test_local_context_brings_up_the_answer_after_a_matching_turn(chat_store) -> None:  # type: ignore[no-untyped-def]
    store, index, batcher, ids = chat_store
    question = "which instrument is he learning"
    plain = HybridRetriever(store, index, batcher, dense_weight=0.0, context_window=0)
    hits = {h.id: h.score for h in await plain.search(question, None, Filters(), limit=5)}
    assert hits.get(ids[1], 0.0) == 0.0  # alone, the answer scores nothing
    context = HybridRetriever(store, index, batcher, dense_weight=0.0, context_window=1, context_weight=0.5)
    ranked = await context.search(question, None, Filters(), limit=5)
    assert [h.id for h in ranked[:2]] == [ids[0], ids[1]]
    assert ranked[1].score == pytest.approx(0.5 * ranked[0].score)
    scores = {h.id: h.score for h in ranked}
    assert scores.get(ids[2], 0.0) == 0.0  # two places away: outside a window of 1
    wide = HybridRetriever(store, index, batcher, dense_weight=0.0, context_window=2, context_weight=0.5)
    wide_scores = {h.id: h.score for h in await wide.search(question, None, Filters(), limit=5)}
    assert wide_scores[ids[2]] == pytest.approx(0.5 * ranked[0].score / 2)


async def test_local_context_stays_inside_filters_and_window(chat_store) -> None:  # type: ignore[no-untyped-def]
    store, index, batcher, ids = chat_store
    r = HybridRetriever(store, index, batcher, dense_weight=0.0, context_window=1)
    only_alice = await r.search("which instrument is he learning", None, Filters(from_handle=("alice",)), limit=5)
    assert ids[1] not in {h.id for h in only_alice}
    hiking = await r.search("hiking weekend", TimeWindow(since=0, until=2000), Filters(), limit=5)
    assert ids[4] not in {h.id for h in hiking}  # its neighbour matched, but it is outside the window
    assert hiking[0].id == ids[3]


async def test_rrf_fusion_with_even_weights_is_plain_rrf(chat_store) -> None:  # type: ignore[no-untyped-def]
    store, index, batcher, _ids = chat_store
    question = "hiking plans with friends"
    r = HybridRetriever(store, index, batcher, fusion="rrf", dense_weight=0.5, context_window=0, candidates=10)
    hits = await r.search(question, None, Filters(), limit=5)
    dense = await index.search(await batcher.embed_query(question), 10, None)
    sparse = await store.fts_search(question, None, Filters(), limit=10)
    plain = reciprocal_rank_fusion([[d for d, _ in dense], [d for d, _ in sparse]], k=60)[:5]
    assert [(h.id, round(h.score, 9)) for h in hits] == [(h.id, round(h.score, 9)) for h in plain]


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"fusion": "max"}, "fusion"),
        ({"dense_weight": 1.5}, "dense_weight"),
        ({"context_window": 6}, "context_window"),
        ({"context_weight": -0.1}, "context_weight"),
    ],
)
def test_bad_settings_are_refused(setting: dict, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        HybridRetriever(None, None, None, **setting)  # type: ignore[arg-type]


# --- the stages run concurrently, the ranking is that of running them one after another ---------------


class OneAfterAnother(HybridRetriever):
    """The reference: each stage awaited before the next starts (embedding, BM25 joined with the window and
    filters in SQL, FAISS, then the vectors of BM25 hits read by fusion itself), and a search without the
    event and sender filters (for the lenders of local context) only after the one with them."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._one_at_a_time = asyncio.Lock()

    async def _hybrid(self, query, words, window, filters, allowed, *, depth, limit):  # type: ignore[no-untyped-def]
        async with self._one_at_a_time:
            vector = await query
            lexical = await self._store.lexical_search(words, window, filters, limit=depth)
            dense = await self._dense(vector, depth, allowed)
            return await self._fuse(vector, dense, _Lexical(lexical), limit=limit)


OPS_WORDS = ["rollback", "latency", "canary", "ledger", "timeout", "flaky", "quota", "payments", "cache", "disk"]


@pytest.fixture
async def ops_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    embedder = HashingEmbedder(dim=64)
    store = await EventStore.open(tmp_path / "ops.sqlite3", filter_columns=True)
    events = []
    for i in range(80):
        text = " ".join(OPS_WORDS[(i * k + i // 7) % len(OPS_WORDS)] for k in (1, 3, 7, 9)[: 1 + i % 4])
        kind = ("rollback", "deploy", "anomaly", "root_cause")[i % 4]
        at = 1000.0 + (i * 53) % 80 * 60  # reported out of time order
        events.append(NewEvent(message_id=f"o{i}", session=f"s{i}", from_handle=("ci", "monitor")[i % 2],
                               trace_id=f"t-{i % 9}", event=kind, service=("api", "billing")[i % 2], occurred_at=at,
                               received_at=at, payload={"event": kind, "text": text}, text=f"{kind} {text}"))
    vectors = embedder.encode([e.text for e in events])
    results = await store.insert(events, vectors, model=embedder.name)
    await store.columns_ready()
    index = FlatIndex(embedder.dim, model=embedder.name)
    index.add(np.array([r.id for r in results], dtype=np.int64), vectors)
    batcher = BatchingEmbedder(embedder)
    aindex = AsyncIndex(index)
    yield store, aindex, batcher
    await batcher.close()
    await aindex.close()
    await store.close()


@pytest.mark.parametrize("fusion", ["calibrated", "convex", "rrf"])
async def test_concurrent_stages_rank_exactly_as_one_after_another(ops_store, fusion: str) -> None:  # type: ignore[no-untyped-def]
    store, index, batcher = ops_store
    # Few dense candidates, so BM25 hits outside the dense list are scored by their stored vectors.
    settings = {"candidates": 5, "fusion": fusion, "dense_weight": 0.3, "context_window": 2, "min_score": 0.05}
    concurrent = HybridRetriever(store, index, batcher, **settings)  # type: ignore[arg-type]
    reference = OneAfterAnother(store, index, batcher, **settings)  # type: ignore[arg-type]
    cases = [(None, Filters()), (TimeWindow(since=1600, until=4000), Filters()),
             (None, Filters(event=("rollback",))),  # an event filter: lenders are also searched without it
             (TimeWindow(since=1300), Filters(event=("anomaly", "root_cause"), service=("api",))),
             (None, Filters(from_handle=("monitor",), trace_id=("t-2", "t-5")))]
    compared = 0
    for window, filters in cases:
        for question in ("rollback latency canary", "flaky payments quota", "disk cache timeout ledger"):
            for limit in (3, 20):
                want = await reference.search(question, window, filters, limit=limit)
                got = await concurrent.search(question, window, filters, limit=limit)
                assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want], (window, filters, question)
                compared += len(want)
    assert compared > 100  # real rankings were compared, not empty lists


async def test_vectors_read_beside_bm25_are_those_the_store_gives(ops_store) -> None:  # type: ignore[no-untyped-def]
    store, _index, _batcher = ops_store
    read_for = np.array([3, 5, 8, 13], dtype=np.int64)
    side = _Lexical(await store.lexical_search("rollback", None, Filters(), limit=5), read_for,
                    await store.vectors(read_for))
    for ids in ([5, 13], [13, 3, 8], [5, 21], [999]):  # [5, 21]: 21 was not read, so all are read now
        got, want = await side.vectors_of(ids, store), await store.vectors(ids)
        assert got[0].tolist() == want[0].tolist() and np.array_equal(got[1], want[1]), ids
    assert len((await side.vectors_of([5, 21], store))[0]) == 2
