"""Reciprocal-rank fusion, and hybrid search inside windows and filters on a real store and FAISS index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory_agent.embedder import BatchingEmbedder, HashingEmbedder
from memory_agent.index import AsyncIndex, FaissIndex
from memory_agent.models import Filters, NewEvent, TimeWindow
from memory_agent.retrieval import HybridRetriever, reciprocal_rank_fusion
from memory_agent.store import EventStore


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
    index = FaissIndex(embedder.dim, model=embedder.name)
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
