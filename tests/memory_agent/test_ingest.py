"""Batched ingest on a real store and FAISS index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.errors import IngestClosed
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.flat import FlatIndex
from memory_agent.ingest import Ingestor
from memory_agent.store.events import EventStore
from memory_agent.types import InsertResult, NewEvent


def event(i: int, message_id: str | None = None) -> NewEvent:
    return NewEvent(message_id=message_id or f"m{i}", session=f"s{i}", from_handle="a", trace_id="t",
                    event="tick", service=None, occurred_at=float(i), received_at=float(i),
                    payload={"event": "tick", "n": i}, text=f"tick number {i}")


async def test_concurrent_reports_share_batches_and_duplicates_get_the_first_id(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "m.sqlite3")
    index = AsyncIndex(FlatIndex(64, model="h"))
    embedder = BatchingEmbedder(HashingEmbedder(dim=64, name="h"))
    seen: list[int] = []
    ingestor = Ingestor(store, index, embedder, model="h", max_batch=64, on_stored=lambda evs: seen.append(len(evs)))
    ingestor.start()
    results = await asyncio.gather(*(ingestor.ingest(event(i)) for i in range(300)))
    assert len({r.id for r in results}) == 300 and not any(r.duplicate for r in results)
    assert ingestor.batches < 100 and sum(seen) == 300
    again = await ingestor.ingest(event(7))
    assert again == InsertResult(results[7].id, duplicate=True)
    # the same message twice in one batch: stored once, both callers get its id
    a, b = await asyncio.gather(ingestor.ingest(event(1000, "same")), ingestor.ingest(event(1001, "same")))
    assert a.id == b.id and [a.duplicate, b.duplicate].count(True) == 1
    assert len(index) == 301 == (await store.stats()).count
    hits = await index.search(HashingEmbedder(dim=64, name="h").encode(["tick number 5"])[0], 1)
    assert hits[0][0] == results[5].id
    await ingestor.close()
    with pytest.raises(IngestClosed):
        await ingestor.ingest(event(2000))
    await embedder.close()
    await index.close()
    await store.close()


async def test_a_failed_batch_fails_its_callers_and_stores_nothing(tmp_path: Path) -> None:
    class Broken(HashingEmbedder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("model exploded")

    store = await EventStore.open(tmp_path / "m.sqlite3")
    index = AsyncIndex(FlatIndex(64, model="h"))
    embedder = BatchingEmbedder(Broken(dim=64, name="h"))
    ingestor = Ingestor(store, index, embedder, model="h")
    ingestor.start()
    results = await asyncio.gather(*(ingestor.ingest(event(i)) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (await store.stats()).count == 0 and len(index) == 0
    await ingestor.close()
    await embedder.close()
    await index.close()
    await store.close()


class GatedStore(EventStore):
    """A real EventStore whose first ``insert`` waits for ``gate`` (so a test can watch the stages overlap)."""

    gate: asyncio.Event
    inserted: list[list[str]]

    async def insert(self, events, vectors, *, model):  # type: ignore[no-untyped-def]
        self.inserted.append([e.message_id for e in events])
        if len(self.inserted) == 1:
            await self.gate.wait()
        return await super().insert(events, vectors, model=model)


class RecordingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(dim=64, name="h")
        self.calls: list[list[str]] = []

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        return super().encode(texts)


async def test_the_next_batch_is_embedded_while_the_previous_one_commits_and_commits_stay_in_order(
    tmp_path: Path,
) -> None:
    store = await GatedStore.open(tmp_path / "m.sqlite3")
    store.gate, store.inserted = asyncio.Event(), []
    index = AsyncIndex(FlatIndex(64, model="h"))
    recorder = RecordingEmbedder()
    embedder = BatchingEmbedder(recorder, max_batch=8)
    ingestor = Ingestor(store, index, embedder, model="h", max_batch=8)
    ingestor.start()
    try:
        tasks = [asyncio.create_task(ingestor.ingest(event(i))) for i in range(24)]
        async with asyncio.timeout(10):
            while len(recorder.calls) < 2:  # batch 2 embedded although batch 1 has not been committed
                await asyncio.sleep(0.01)
        assert len(store.inserted) == 1 and not any(t.done() for t in tasks)
        await asyncio.sleep(0.05)
        assert len(recorder.calls) == 2  # no further batch runs ahead: one embedding, one committing
        store.gate.set()
        results = await asyncio.gather(*tasks)
        assert store.inserted == [[f"m{i}" for i in range(b, b + 8)] for b in (0, 8, 16)]
        ids = [r.id for r in results]
        assert ids == sorted(ids) and len(set(ids)) == 24 and not any(r.duplicate for r in results)
        assert len(index) == 24 and ingestor.batches == 3 and ingestor.stored == 24
    finally:
        store.gate.set()
        await ingestor.close()
        await embedder.close()
        await index.close()
        await store.close()


async def test_close_waits_for_the_commit_in_flight(tmp_path: Path) -> None:
    store = await GatedStore.open(tmp_path / "m.sqlite3")
    store.gate, store.inserted = asyncio.Event(), []
    index = AsyncIndex(FlatIndex(64, model="h"))
    embedder = BatchingEmbedder(HashingEmbedder(dim=64, name="h"))
    ingestor = Ingestor(store, index, embedder, model="h", max_batch=4)
    ingestor.start()
    tasks = [asyncio.create_task(ingestor.ingest(event(i))) for i in range(6)]
    async with asyncio.timeout(10):
        while not store.inserted:
            await asyncio.sleep(0.01)
    closing = asyncio.create_task(ingestor.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    store.gate.set()
    await closing
    assert all(t.done() and not t.exception() for t in tasks)
    assert (await store.stats()).count == 6 == len(index)
    await embedder.close()
    await index.close()
    await store.close()
