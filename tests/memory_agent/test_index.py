"""FlatIndex and open_index against real FAISS and a real SQLite store in tmp_path."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.errors import ConfigError, IndexFileError, VectorModelMismatch
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.files import sidecar_path
from memory_agent.index.flat import FlatIndex
from memory_agent.index.repair import load_index, open_index
from memory_agent.protocols import VectorIndex
from memory_agent.store.events import EventStore
from memory_agent.types import Filters, NewEvent, TimeWindow

pytestmark = pytest.mark.timeout(60)

DIM = 32
T0 = 1_700_000_000.0


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(DIM)
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return super().encode(texts)


def random_unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(ids[i]) for i in order]


def make_events(start: int, n: int) -> list[NewEvent]:
    return [
        NewEvent(
            message_id=f"m-{i}",
            session="s",
            from_handle="@ci" if i % 2 else "@ops",
            trace_id=f"t-{i % 3}",
            event="deploy" if i % 3 else "rollback",
            service="api-gateway",
            occurred_at=T0 + i,
            received_at=T0 + i,
            payload={"i": i},
            text=f"event {i} {'rollback' if i % 3 == 0 else 'deploy'} of api-gateway",
        )
        for i in range(start, start + n)
    ]


async def fill(store: EventStore, emb: HashingEmbedder, start: int, n: int) -> list[int]:
    events = make_events(start, n)
    results = await store.insert(events, emb.encode([e.text for e in events]), model=emb.name)
    return [r.id for r in results]


@pytest.fixture
async def store(tmp_path: Path):
    s = await EventStore.open(tmp_path / "memory.sqlite3")
    yield s
    await s.close()


def test_search_is_exact_and_filtered_search_only_returns_allowed_ids() -> None:
    vectors = random_unit(500)
    ids = np.arange(1000, 1500, dtype=np.int64) * 3
    index = FlatIndex(DIM, model="random")
    assert isinstance(index, VectorIndex)
    index.add(ids, vectors)
    assert len(index) == 500 and index.dim == DIM and index.kind == "flat"
    query = random_unit(1, seed=1)[0]

    hits = index.search(query, 10)
    assert [h[0] for h in hits] == brute_force(vectors, ids, query, 10)
    assert hits[0][1] == pytest.approx(float(vectors[np.where(ids == hits[0][0])[0][0]] @ query), abs=1e-5)
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(hits))

    rng = np.random.default_rng(2)
    allowed = np.sort(rng.choice(ids, size=37, replace=False))
    mask = np.isin(ids, allowed)
    hits = index.search(query, 10, allowed=allowed)
    assert [h[0] for h in hits] == brute_force(vectors[mask], ids[mask], query, 10)
    assert {h[0] for h in index.search(query, 100, allowed=allowed)} == set(allowed.tolist())
    assert index.search(query, 10, allowed=np.array([], dtype=np.int64)) == []
    assert index.search(query, 10, allowed=np.array([7], dtype=np.int64)) == []  # not in the index
    assert len(index.search(query, 10_000)) == 500
    with pytest.raises(ValueError):
        index.search(np.zeros(DIM + 1, dtype=np.float32), 3)


def test_add_replaces_existing_ids_and_remove() -> None:
    vectors = random_unit(4)
    index = FlatIndex(DIM)
    index.add(np.array([1, 2, 3]), vectors[:3])
    index.add(np.array([2, 9]), vectors[[3, 0]])
    assert len(index) == 4
    assert np.array_equal(index.vectors([2]), vectors[[3]])
    assert index.search(vectors[3], 1)[0][0] == 2
    assert index.remove([2, 42]) == 1
    assert sorted(index.ids().tolist()) == [1, 3, 9]
    with pytest.raises(KeyError):
        index.vectors([2])
    with pytest.raises(ValueError):
        index.add(np.array([5, 5]), vectors[:2])
    with pytest.raises(ValueError):
        index.add(np.array([5]), vectors[:2])


def test_save_load_round_trip_and_load_errors(tmp_path: Path) -> None:
    path = tmp_path / "idx" / "vectors.faiss"
    vectors = random_unit(50)
    ids = np.arange(1, 51, dtype=np.int64)
    index = FlatIndex(DIM, model="m1")
    index.add(ids, vectors)
    index.save(path)
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["count"] == 50 and meta["max_id"] == 50 and meta["dim"] == DIM and meta["model"] == "m1"

    loaded = load_index(path, dim=DIM, kind="flat")
    assert loaded.model == "m1" and len(loaded) == 50
    assert np.array_equal(loaded.vectors(ids), vectors)

    with pytest.raises(IndexFileError, match="dimension"):
        load_index(path, dim=DIM * 2, kind="flat")
    with pytest.raises(IndexFileError, match="missing"):
        load_index(tmp_path / "nope.faiss", dim=DIM, kind="flat")

    good = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(IndexFileError) as err:
        load_index(path, dim=DIM, kind="flat")
    assert err.value.path == str(path)

    # Garbage that matches the sidecar checksum still fails as "not a FAISS index".
    path.write_bytes(b"garbage!" * 100)
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="not a FAISS index"):
        load_index(path, dim=DIM, kind="flat")

    path.write_bytes(good)
    sidecar_path(path).unlink()
    with pytest.raises(IndexFileError, match="sidecar"):
        load_index(path, dim=DIM, kind="flat")


async def test_open_index_rebuilds_from_sqlite_without_embedding(tmp_path: Path, store: EventStore) -> None:
    emb = CountingEmbedder()
    ids = await fill(store, emb, 0, 40)
    calls = emb.calls
    stored = np.concatenate([v async for _, v in store.iter_vectors()])
    path = tmp_path / "vectors.faiss"

    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("index file missing: rebuilt 40 vectors from SQLite"), what
    assert np.array_equal(index.vectors(ids), stored)
    assert path.exists() and sidecar_path(path).exists()

    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("loaded 40 vectors from"), what
    assert np.array_equal(index.vectors(ids), stored)

    path.unlink()
    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("index file missing: rebuilt 40"), what

    path.write_bytes(np.random.default_rng(0).bytes(4096))
    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("index file corrupt (") and "rebuilt 40 vectors" in what, what
    assert np.array_equal(index.vectors(ids), stored)
    assert load_index(path, dim=DIM, kind="flat").ids().tolist() == ids  # the rebuilt file was saved

    more = await fill(store, emb, 40, 5)  # the file now has fewer rows than SQLite
    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("index stale (file has 40 vectors") and "rebuilt 45 vectors" in what, what
    all_stored = np.concatenate([v async for _, v in store.iter_vectors()])
    assert np.array_equal(index.vectors(ids + more), all_stored)

    await store.delete(ids[:3])  # same max id, fewer rows
    index, what = await open_index(path, store, dim=DIM, model=emb.name)
    assert what.startswith("index stale") and len(index) == 42, what
    assert emb.calls == calls + 1  # only the embedding of the 5 new events; no rebuild embedded anything


async def test_open_index_empty_store_and_model_mismatch(tmp_path: Path, store: EventStore) -> None:
    path = tmp_path / "vectors.faiss"
    index, what = await open_index(path, store, dim=DIM, model="hashing-32")
    assert len(index) == 0 and what.startswith("new flat index for an empty store"), what
    index, what = await open_index(path, store, dim=DIM, model="hashing-32")
    assert what.startswith("loaded 0 vectors")
    # A saved file of another model is stale, not trusted.
    index, what = await open_index(path, store, dim=DIM, model="other")
    assert what.startswith("index stale (file has model 'hashing-32'"), what

    emb = HashingEmbedder(DIM)
    await fill(store, emb, 0, 3)
    with pytest.raises(VectorModelMismatch) as err:
        await open_index(path, store, dim=DIM, model="another-model")
    assert isinstance(err.value, ConfigError)
    assert "memory-agent reindex" in str(err.value) and "'hashing-32' (dim 32): 3 rows" in str(err.value)
    assert err.value.configured == ("another-model", DIM)
    with pytest.raises(VectorModelMismatch):
        await open_index(path, store, dim=16, model=emb.name)


async def test_filtered_search_with_store_candidates(tmp_path: Path, store: EventStore) -> None:
    emb = HashingEmbedder(DIM)
    ids = await fill(store, emb, 0, 60)
    index, _ = await open_index(tmp_path / "v.faiss", store, dim=DIM, model=emb.name)
    aindex = AsyncIndex(index)
    try:
        query = emb.encode(["rollback of api-gateway"])[0]
        window = TimeWindow(since=T0 + 10, until=T0 + 30)
        filters = Filters(event=("rollback",))
        allowed = await store.candidate_ids(window, filters)
        assert allowed is not None and len(allowed) > 0
        hits = await aindex.search(query, 50, allowed)
        assert {h[0] for h in hits} == set(allowed.tolist())
        events = await store.get([h[0] for h in hits])
        assert all(e.event == "rollback" and window.contains(e.occurred_at) for e in events)

        new = make_events(100, 1)
        vec = emb.encode([new[0].text])
        new_id = (await store.insert(new, vec, model=emb.name))[0].id
        await aindex.add(np.array([new_id]), vec)
        assert len(aindex) == 61 and aindex.dim == DIM and aindex.kind == "flat" and aindex.model == emb.name
        assert (await aindex.search(vec[0], 1))[0][0] == new_id
        assert await aindex.remove([ids[0]]) == 1
        await aindex.save(tmp_path / "v.faiss")
        _, what = await open_index(tmp_path / "v.faiss", store, dim=DIM, model=emb.name)
        assert what.startswith("index stale")  # SQLite still holds ids[0]
    finally:
        await aindex.close()
        await aindex.close()
    with pytest.raises(IndexFileError):
        await aindex.search(query, 1)
