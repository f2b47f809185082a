"""Index kinds (flat, ivf) against real FAISS and a real SQLite store: choice by size, deletion, restart
without rebuilding, and filtered searches that stay exact under a narrow time window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memory_agent.config import IndexConfig
from memory_agent.errors import IndexFileError
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.base import exact_top_k
from memory_agent.index.files import sidecar_path
from memory_agent.index.flat import FlatIndex
from memory_agent.index.ivf import IVFIndex, auto_nlist
from memory_agent.index.repair import load_index, open_index, plan_index
from memory_agent.store.events import EventStore
from memory_agent.types import Filters, NewEvent, TimeWindow

pytestmark = pytest.mark.timeout(120)

DIM = 32
MODEL = "random-32"
T0 = 1_700_000_000.0
# ivf from 2000 vectors; tests stay small but exercise the approximate kind.
SMALL = IndexConfig(exact_threshold=2000, nprobe=2, exact_candidates=64, rerank=2)


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = vectors @ query
    return [int(ids[i]) for i in np.lexsort((ids, -scores))[:k]]


async def fill(store: EventStore, start: int, vectors: np.ndarray) -> np.ndarray:
    events = [
        NewEvent(message_id=f"m-{start + i}", session="s", from_handle="ci", trace_id=f"t-{start + i}",
                 event="deploy" if i % 2 else "rollback", service="api", occurred_at=T0 + 60.0 * (start + i),
                 received_at=T0, payload={"i": start + i}, text=f"event {start + i}")
        for i in range(len(vectors))
    ]
    results = await store.insert(events, vectors, model=MODEL, bulk=True)
    return np.array([r.id for r in results], dtype=np.int64)


@pytest.fixture
async def store(tmp_path: Path):
    s = await EventStore.open(tmp_path / "memory.sqlite3")
    yield s
    await s.close()


def test_plan_by_size_with_hysteresis_and_list_counts() -> None:
    cfg = IndexConfig(exact_threshold=10_000)
    assert plan_index(cfg, 0) == ("flat", 0)
    assert plan_index(cfg, 9_999) == ("flat", 0)
    assert plan_index(cfg, 10_000) == ("ivf", auto_nlist(10_000)) == ("ivf", 128)
    # A saved ivf stays ivf down to half the threshold; a saved flat switches at the threshold.
    assert plan_index(cfg, 6_000, current=("ivf", 64)) == ("ivf", 64)
    assert plan_index(cfg, 4_999, current=("ivf", 64)) == ("flat", 0)
    assert plan_index(cfg, 9_999, current=("flat", 0)) == ("flat", 0)
    # Auto lists are kept while within a factor 4 of sqrt(n), else the index is retrained.
    assert plan_index(cfg, 1_000_000, current=("ivf", 512)) == ("ivf", 512)
    assert plan_index(cfg, 1_000_000, current=("ivf", 128)) == ("ivf", 1024)
    # Forced kinds; ivf needs 32 * 39 vectors to train, and at most n / 39 lists.
    assert plan_index(IndexConfig(kind="flat"), 10**7) == ("flat", 0)
    assert plan_index(IndexConfig(kind="ivf"), 1_000) == ("flat", 0)
    assert plan_index(IndexConfig(kind="ivf", nlist=4096), 100_000) == ("ivf", 2564)
    assert plan_index(IndexConfig(kind="ivf", nlist=100), 100_000, current=("ivf", 128)) == ("ivf", 100)
    assert [auto_nlist(n) for n in (1, 100, 3_000, 1_000_000)] == [1, 2, 64, 1024]


def test_ivf_add_remove_replace_and_filtered_search() -> None:
    vectors = unit(3000, seed=1)
    ids = np.arange(10, 3010, dtype=np.int64) * 2
    index = IVFIndex.trained(vectors, nlist=32, model=MODEL, nprobe=32)  # all lists: exhaustive
    index.add(ids, vectors)
    assert (len(index), index.kind, index.exact, index.nlist, index.max_id) == (3000, "ivf", False, 32, 6018)
    assert [index.nprobe_for(m) for m in (None, 3000, 1500, 10)] == [32, 32, 32, 32]  # never more than all lists
    index.nprobe = 2
    assert [index.nprobe_for(m) for m in (None, 3000, 1500, 600, 10)] == [2, 2, 4, 8, 8]  # scaled, capped at 4x
    index.nprobe = 32
    assert sorted(index.ids().tolist()) == ids.tolist()
    query = unit(1, seed=2)[0]
    got = [i for i, _ in index.search(query, 10)]
    assert len(set(got) & set(brute(vectors, ids, query, 10))) >= 9  # 8-bit scores, every list probed

    allowed = ids[::7]
    hits = index.search(query, 50, allowed=allowed)
    assert len(hits) == 50 and set(i for i, _ in hits) <= set(allowed.tolist())
    assert index.search(query, 5, allowed=np.array([], dtype=np.int64)) == []
    assert index.search(query, 5, allowed=np.array([7], dtype=np.int64)) == []
    assert np.allclose(index.vectors(ids[:3]), vectors[:3], atol=0.05)  # decoded 8-bit codes

    # Deletion (forget, retention) works on the approximate kind: removed ids never come back.
    gone = np.array([i for i, _ in index.search(query, 5)], dtype=np.int64)
    assert index.remove(np.append(gone, 99_999)) == 5
    assert len(index) == 2995 and not set(gone.tolist()) & {i for i, _ in index.search(query, 3000)}
    assert index.search(query, 10, allowed=gone) == []
    with pytest.raises(KeyError):
        index.vectors(gone[:1])
    # Adding an id already held replaces its vector.
    index.add(ids[:1], -query[None, :])
    index.add(gone[:1], query[None, :])
    assert len(index) == 2996 and index.search(query, 1)[0][0] == gone[0]
    with pytest.raises(ValueError):
        index.add(np.array([5, 5]), vectors[:2])
    with pytest.raises(ValueError, match="sample"):
        IVFIndex.trained(vectors[:10], nlist=32)


def test_exact_top_k_breaks_ties_by_id() -> None:
    v = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    assert exact_top_k(np.array([1, 0], dtype=np.float32), np.array([9, 4, 2]), v, 2) == [(2, 1.0), (9, 1.0)]
    assert exact_top_k(np.array([1, 0], dtype=np.float32), np.array([], dtype=np.int64), v[:0], 2) == []


def test_save_load_keeps_kind_and_lists(tmp_path: Path) -> None:
    vectors = unit(1500, seed=3)
    ids = np.arange(1, 1501, dtype=np.int64)
    index = IVFIndex.trained(vectors, nlist=16, model=MODEL, nprobe=4)
    index.add(ids, vectors)
    path = tmp_path / "ivf.faiss"
    index.save(path)
    meta = json.loads(sidecar_path(path).read_text())
    assert (meta["kind"], meta["nlist"], meta["count"], meta["max_id"]) == ("ivf", 16, 1500, 1500)
    loaded = load_index(path, dim=DIM, nprobe=4)
    assert isinstance(loaded, IVFIndex) and loaded.nlist == 16 and len(loaded) == 1500
    q = vectors[42]
    assert loaded.search(q, 5) == index.search(q, 5)
    assert loaded.remove([43]) == 1  # the direct map survives a save
    with pytest.raises(IndexFileError, match="'ivf' index, not 'flat'"):
        load_index(path, dim=DIM, kind="flat")
    meta["kind"] = "flat"
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="not a 'flat' index"):
        load_index(path, dim=DIM)


async def test_store_grows_past_the_threshold_then_restarts_without_rebuilding(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "index.faiss"
    first = await fill(store, 0, unit(1500, seed=4))
    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=SMALL)
    assert index.kind == "flat" and "rebuilt 1500 vectors from SQLite (flat)" in what, what

    more = await fill(store, 1500, unit(1500, seed=5))  # 3000 >= 2000: ivf
    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=SMALL)
    assert what.startswith("index kind flat but 3000 vectors want ivf with 64 lists: rebuilt 3000"), what
    assert isinstance(index, IVFIndex) and index.nlist == 64 and index.nprobe == 2
    assert json.loads(sidecar_path(path).read_text())["kind"] == "ivf"

    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=SMALL)
    assert what.startswith("loaded 3000 vectors from") and what.endswith("(ivf)"), what

    # A crash after SQLite committed more rows: the ivf file is caught up, not retrained.
    extra = await fill(store, 3000, unit(10, seed=6))
    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=SMALL)
    assert "by adding the 10 it lacked" in what and len(index) == 3010 and index.nlist == 64, what
    assert set(index.ids().tolist()) == set(np.concatenate([first, more, extra]).tolist())

    # Deleting events keeps the kind (hysteresis) and the index, once the daemon removed and saved them.
    await store.delete(first[:100])
    index.remove(first[:100])
    index.save(path)
    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=SMALL)
    assert what.startswith("loaded 2910 vectors"), what

    # A configured kind that differs from the file's rebuilds it.
    index, what = await open_index(path, store, dim=DIM, model=MODEL, config=IndexConfig(kind="flat"))
    assert index.kind == "flat" and what.startswith("index kind ivf with 64 lists but 2910 vectors want flat")


async def test_index_with_the_right_ids_but_other_vectors_is_rebuilt(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "index.faiss"
    ids = await fill(store, 0, unit(50, seed=7))
    wrong = FlatIndex(DIM, model=MODEL)
    wrong.add(ids, unit(50, seed=8))
    wrong.save(path)
    index, what = await open_index(path, store, dim=DIM, model=MODEL)
    assert what.startswith("index stale (vectors differ from SQLite at 32 of 32 sampled ids)"), what
    assert np.array_equal(index.vectors(ids), unit(50, seed=7))


async def test_narrow_window_over_ivf_is_exactly_brute_force(tmp_path: Path, store: EventStore) -> None:
    vectors = unit(4000, seed=9)
    ids = await fill(store, 0, vectors)
    index, _ = await open_index(tmp_path / "i.faiss", store, dim=DIM, model=MODEL, config=SMALL)
    assert index.kind == "ivf" and index.nprobe == 2  # 2 of 64 lists: the ANN alone misses most neighbours
    exact = AsyncIndex(index, vectors=store, exact_candidates=SMALL.exact_candidates, rerank=SMALL.rerank)
    plain = AsyncIndex(index)
    try:
        for seed in range(5):
            query = unit(1, seed=100 + seed)[0]
            # Narrow: 60 events in the window (<= exact_candidates): scored exactly from SQLite.
            window = TimeWindow(since=T0 + 60 * (500 + 700 * seed), until=T0 + 60 * (560 + 700 * seed))
            allowed = await store.candidate_ids(window, Filters())
            assert allowed is not None and len(allowed) == 60
            mask = np.isin(ids, allowed)
            want = brute(vectors[mask], ids[mask], query, 10)
            hits = await exact.search(query, 10, allowed)
            assert [i for i, _ in hits] == want
            assert [s for _, s in hits] == pytest.approx(sorted((vectors[mask] @ query).tolist(), reverse=True)[:10])
            # 400 ids (> exact_candidates): an ANN search inside the allowed ids only, probing
            # nprobe * n / m = 20 lists capped at 4 * nprobe = 8, re-scored exactly.
            window = TimeWindow(since=T0 + 60 * 100 * seed, until=T0 + 60 * (100 * seed + 800))
            allowed = await store.candidate_ids(window, Filters(event=("rollback",)))
            assert allowed is not None and len(allowed) == 400 and index.nprobe_for(400) == 8
            hits = await exact.search(query, 10, allowed)
            assert len(hits) == 10 and {i for i, _ in hits} <= set(allowed.tolist())
            by_id = dict(zip(ids.tolist(), vectors @ query, strict=True))
            assert all(score == pytest.approx(float(by_id[i]), abs=1e-6) for i, score in hits)
        # Unrestricted: the ANN (2 lists) with exact re-scoring, scores are exact cosines.
        query = vectors[1234]
        hits = await exact.search(query, 5)
        assert hits[0][0] == ids[1234] and hits[0][1] == pytest.approx(1.0, abs=1e-6)
        by_id = dict(zip(ids.tolist(), vectors @ query, strict=True))
        assert all(score == pytest.approx(float(by_id[i]), abs=1e-6) for i, score in hits)
        # Without the store the index's own 8-bit scores are returned.
        assert len(await plain.search(query, 5)) == 5
    finally:
        await exact.close()
        await plain.close()


async def test_deleted_events_never_come_back_through_async_search(tmp_path: Path, store: EventStore) -> None:
    vectors = unit(3000, seed=10)
    ids = await fill(store, 0, vectors)
    index, _ = await open_index(tmp_path / "i.faiss", store, dim=DIM, model=MODEL, config=SMALL)
    aindex = AsyncIndex(index, vectors=store, exact_candidates=64, rerank=2)
    try:
        query = vectors[10]
        top = [i for i, _ in await aindex.search(query, 5)]
        assert top[0] == ids[10]
        await store.delete(top)
        assert await aindex.remove(top) == 5
        after = await aindex.search(query, 50)
        assert not set(top) & {i for i, _ in after} and len(after) == 50
        window = await store.candidate_ids(TimeWindow(since=T0, until=T0 + 60 * 30), Filters())
        assert window is not None and not set(top) & {i for i, _ in await aindex.search(query, 50, window)}
        await aindex.save(tmp_path / "i.faiss")
    finally:
        await aindex.close()
    _, what = await open_index(tmp_path / "i.faiss", store, dim=DIM, model=MODEL, config=SMALL)
    assert what.startswith("loaded 2995 vectors"), what


async def test_saves_write_a_copy_one_at_a_time_while_searches_go_on(tmp_path: Path) -> None:
    import asyncio

    vectors = unit(3000, seed=12)
    ids = np.arange(1, 3001, dtype=np.int64)
    index = IVFIndex.trained(vectors, nlist=32, model=MODEL, nprobe=4)
    index.add(ids, vectors)
    aindex = AsyncIndex(index)
    path = tmp_path / "i.faiss"
    try:
        saving = [asyncio.create_task(aindex.save(path)) for _ in range(3)]
        await aindex.add(np.array([5000]), vectors[:1])  # after the first copy was taken
        hits = await aindex.search(vectors[7], 3)
        saving[1].cancel()  # a cancelled caller does not leave a half-written file behind
        await asyncio.gather(*saving, return_exceptions=True)
        assert hits[0][0] == 8
        await aindex.save(path)
    finally:
        await aindex.close()
    loaded = load_index(path, dim=DIM)
    assert isinstance(loaded, IVFIndex) and len(loaded) == 3001 and loaded.nlist == 32
    assert not list(tmp_path.glob(".*.tmp"))
