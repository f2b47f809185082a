"""Acceptance (memory_agent.ingest) and the embedding backlog (memory_agent.backlog) on a real SQLite store and
FAISS index, with the small deterministic embedder: commit first, embed behind, and what goes wrong."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_agent.backlog import DenseParts, EmbeddingBacklog
from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.errors import ConfigError, IngestClosed, ReportRefused, StorageLost, StorageUnavailable
from memory_agent.health import Outage
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.repair import open_index
from memory_agent.ingest import Committed, Ingestor
from memory_agent.store.events import EventStore
from memory_agent.types import Filters, InsertResult, NewEvent

pytestmark = pytest.mark.timeout(60)

log = logging.getLogger("tests.ingest")


def event(i: int, message_id: str | None = None, *, name: str = "tick") -> NewEvent:
    return NewEvent(message_id=message_id or f"m{i}", session=f"s{i}", from_handle="a", trace_id="t",
                    event=name, service=None, occurred_at=float(i), received_at=float(i),
                    payload={"event": name, "n": i}, text=f"{name} number {i}")


def outage() -> Outage:
    return Outage("storage", impact="retrying", logger=log)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    s = await EventStore.open(tmp_path / "m.sqlite3", busy_timeout=0.2)
    yield s
    await s.close()


def vector_rows(path: Path) -> tuple[int, int]:
    """(rows, rows with a vector), read by another connection."""
    with sqlite3.connect(path) as conn:
        total, embedded = conn.execute("SELECT count(*), count(embedding) FROM events").fetchone()
    return int(total), int(embedded)


async def test_reports_are_committed_in_shared_transactions_without_waiting_for_the_model(store: EventStore) -> None:
    seen: list[Committed] = []
    ingestor = Ingestor(store, outage=outage(), batch=64, on_committed=seen.append)
    ingestor.start()
    results = await asyncio.gather(*(ingestor.accept(event(i)) for i in range(300)))
    assert len({r.id for r in results}) == 300 and not any(r.duplicate for r in results)
    assert ingestor.batches < 100 and sum(len(c.ids) for c in seen) == 300
    assert vector_rows(store.path) == (300, 0)  # stored and acknowledged; no vector yet
    assert (await store.backlog()).count == 300
    # Found at once by words (FTS5) and filters, before any embedding.
    assert [h for h, _ in await store.fts_search("number 7", None, Filters(), limit=1)] == [results[7].id]
    again = await ingestor.accept(event(7))
    assert again == InsertResult(results[7].id, duplicate=True)
    a, b = await asyncio.gather(ingestor.accept(event(1000, "same")), ingestor.accept(event(1001, "same")))
    assert a.id == b.id and [a.duplicate, b.duplicate].count(True) == 1
    await ingestor.close()
    with pytest.raises(IngestClosed):
        await ingestor.accept(event(2000))


class GatedStore(EventStore):
    """A real EventStore whose inserts wait for ``gate``."""

    gate: asyncio.Event
    inserted: list[int]

    async def insert(self, events, vectors=None, *, model=None, bulk=False):  # type: ignore[no-untyped-def]
        self.inserted.append(len(events))
        await self.gate.wait()
        return await super().insert(events, vectors, model=model, bulk=bulk)


async def test_a_full_queue_makes_callers_wait_and_loses_nothing(tmp_path: Path) -> None:
    store = await GatedStore.open(tmp_path / "m.sqlite3")
    store.gate, store.inserted = asyncio.Event(), []
    ingestor = Ingestor(store, outage=outage(), queue=10, batch=4)
    ingestor.start()
    try:
        tasks = [asyncio.create_task(ingestor.accept(event(i))) for i in range(50)]
        async with asyncio.timeout(10):
            while not store.inserted:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        # One batch in the writer's hands, 10 in the queue, the rest waiting for room: none stored, none lost.
        assert store.inserted == [4] and ingestor.queued == 46 and not any(t.done() for t in tasks)
        store.gate.set()
        results = await asyncio.gather(*tasks)
        assert len({r.id for r in results}) == 50 and ingestor.queued == 0
        assert max(store.inserted) <= 4
    finally:
        store.gate.set()
        await ingestor.close()
        await store.close()


async def test_a_report_that_fails_its_transaction_is_tried_alone_and_refused(store: EventStore, caplog) -> None:  # type: ignore[no-untyped-def]
    with sqlite3.connect(store.path) as conn:  # storage that refuses one particular report
        conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events WHEN new.event = 'poison' "
                     "BEGIN SELECT RAISE(ABORT, 'this report poisons its batch'); END")
    ingestor = Ingestor(store, outage=outage(), batch=64)
    ingestor.start()
    caplog.set_level(logging.WARNING, logger="memory_agent.ingest")
    events = [event(i, name="poison" if i == 5 else "tick") for i in range(20)]
    results = await asyncio.gather(*(ingestor.accept(e) for e in events), return_exceptions=True)
    refused = [r for r in results if isinstance(r, ReportRefused)]
    assert len(refused) == 1 and results[5] is refused[0]
    assert all(isinstance(r, InsertResult) for i, r in enumerate(results) if i != 5)
    assert vector_rows(store.path)[0] == 19 and ingestor.refused == 1 and ingestor.isolated_batches == 1
    error_id = refused[0].error_id
    assert any(error_id in r.getMessage() and "poisons its batch" in r.getMessage() for r in caplog.records)
    await ingestor.close()


async def test_a_locked_store_is_an_outage_logged_once_and_reports_go_in_when_it_ends(store: EventStore, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="tests.ingest")
    storage = outage()
    ingestor = Ingestor(store, outage=storage)
    ingestor.start()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        for attempt in range(3):
            with pytest.raises(StorageUnavailable) as info:
                await ingestor.accept(event(attempt))
        assert "busy" in info.value.cause and storage.down and storage.failures == 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (await ingestor.accept(event(0))).id == 1  # storage is back: the same report goes in
    assert not storage.down
    lines = [r.getMessage() for r in caplog.records]
    assert sum("storage unavailable" in line for line in lines) == 1
    assert sum("storage is back after" in line and "3 failed attempts" in line for line in lines) == 1
    await ingestor.close()


async def test_a_deleted_database_file_stops_acknowledgement(store: EventStore) -> None:
    lost: list[StorageLost] = []
    ingestor = Ingestor(store, outage=outage(), on_lost=lost.append)
    ingestor.start()
    assert (await ingestor.accept(event(1))).id == 1
    store.path.unlink()  # SQLite would go on writing into the unlinked file
    with pytest.raises(StorageLost, match="deleted"):
        await ingestor.accept(event(2))
    with pytest.raises(StorageLost):
        await ingestor.accept(event(3))
    assert len(lost) == 1 and ingestor.stored == 1
    await ingestor.close()


# --- the embedding backlog ----------------------------------------------------------------------------


class PickyEmbedder(HashingEmbedder):
    """The hashing embedder, failing on texts that contain ``refuse`` (or on everything while ``broken``)."""

    def __init__(self, refuse: str = "\x00never") -> None:
        super().__init__(dim=32, name="h32")
        self.refuse = refuse
        self.broken = False
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.broken or any(self.refuse in t for t in texts):
            raise RuntimeError("the model cannot embed this")
        self.texts += len(texts)
        return super().encode(texts)


def backlog_for(store: EventStore, embedder: HashingEmbedder, index_path: Path, *, loads: list[bool] | None = None,
                batch: int = 16, retry: float = 0.05) -> tuple[EmbeddingBacklog, list[DenseParts]]:
    """An EmbeddingBacklog over ``store``; ``loads`` scripts load attempts (False = the model fails to load)."""
    ready: list[DenseParts] = []

    async def open_dense() -> DenseParts:
        if loads and not loads.pop(0):
            raise ConfigError("embedder model 'h32': cannot load (test)")
        index, report = await open_index(index_path, store, dim=embedder.dim, model=embedder.name)
        return DenseParts(BatchingEmbedder(embedder, max_batch=8), AsyncIndex(index, vectors=store), report)

    backlog = EmbeddingBacklog(store, open_dense=open_dense, on_ready=ready.append, storage=outage(),
                               vector_lock=asyncio.Lock(), model=embedder.name, batch=batch, retry_interval=retry,
                               retry_cap=0.05)
    return backlog, ready


async def close_parts(parts: list[DenseParts]) -> None:
    for p in parts:
        await p.embedder.close()
        await p.index.close()


async def test_the_backlog_embeds_in_id_order_once_and_faiss_equals_sqlite(store: EventStore, tmp_path: Path) -> None:
    await store.insert([event(i) for i in range(100)])
    embedder = PickyEmbedder()
    backlog, ready = backlog_for(store, embedder, tmp_path / "i.faiss")
    assert await backlog.load()
    await backlog.start()
    assert backlog.pending == 100
    ingestor = Ingestor(store, outage=outage(), on_committed=lambda c: backlog.added(len(c.ids), 0.0))
    ingestor.start()
    await asyncio.gather(*(ingestor.accept(event(i)) for i in range(100, 150)))  # more arrive meanwhile
    async with asyncio.timeout(20):
        await backlog.wait_idle()
    index = ready[0].index
    assert vector_rows(store.path) == (150, 150) and len(index) == 150 and embedder.texts == 150
    ids, vectors = await store.vectors(np.arange(1, 151))
    assert np.array_equal(index.index.vectors(ids), vectors)
    assert np.allclose(vectors, HashingEmbedder(dim=32).encode([f"tick number {i}" for i in range(150)]))
    assert backlog.pending == 0 and backlog.embedded == 150 and (await store.backlog()).count == 0
    # A row that already has a vector is never written again.
    assert len(await store.set_vectors([1, 2], np.ones((2, 32), dtype=np.float32), model="h32")) == 0
    await ingestor.close()
    await backlog.close()
    await close_parts(ready)


async def test_a_text_the_model_cannot_embed_is_marked_and_the_rest_is_embedded(store: EventStore, tmp_path: Path) -> None:
    await store.insert([event(i, name="poison" if i == 7 else "tick") for i in range(20)])
    backlog, ready = backlog_for(store, PickyEmbedder(refuse="poison"), tmp_path / "i.faiss")
    assert await backlog.load()
    await backlog.start()
    async with asyncio.timeout(20):
        await backlog.wait_idle()
    assert vector_rows(store.path) == (20, 19) and len(ready[0].index) == 19
    stored = await store.backlog()
    assert stored.count == 0 and stored.failed == 1 and backlog.state == "ok"
    with sqlite3.connect(store.path) as conn:
        [(reason,)] = conn.execute("SELECT embedding_error FROM events WHERE event = 'poison'").fetchall()
    assert reason.startswith("e-") and "RuntimeError" in reason
    await backlog.close()
    await close_parts(ready)


async def test_without_a_model_the_backlog_waits_degraded_and_embeds_once_it_loads(store: EventStore, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="memory_agent.backlog")
    await store.insert([event(i) for i in range(30)])
    embedder = PickyEmbedder()
    backlog, ready = backlog_for(store, embedder, tmp_path / "i.faiss", loads=[False, False, True])
    assert not await backlog.load()
    assert backlog.state == "unavailable" and "cannot load" in backlog.error and not ready
    await backlog.start()
    async with asyncio.timeout(20):
        await backlog.wait_idle()
    assert backlog.state == "ok" and vector_rows(store.path) == (30, 30) and len(ready[0].index) == 30
    lines = [r.getMessage() for r in caplog.records]
    assert sum("embedding model unavailable" in line and "degraded" in line for line in lines) == 1
    assert any("embedding model is back" in line for line in lines)
    await backlog.close()
    await close_parts(ready)


async def test_a_model_that_fails_on_everything_is_failing_then_recovers(store: EventStore, tmp_path: Path) -> None:
    await store.insert([event(i) for i in range(5)])
    embedder = PickyEmbedder()
    embedder.broken = True
    backlog, ready = backlog_for(store, embedder, tmp_path / "i.faiss", retry=0.2)
    assert await backlog.load()
    await backlog.start()
    async with asyncio.timeout(10):
        while backlog.state != "failing":
            await asyncio.sleep(0.01)
    assert vector_rows(store.path) == (5, 0) and (await store.backlog()).failed == 0  # nothing blamed on the rows
    embedder.broken = False
    async with asyncio.timeout(20):
        await backlog.wait_idle()
    assert backlog.state == "ok" and vector_rows(store.path) == (5, 5)
    await backlog.close()
    await close_parts(ready)


async def test_close_leaves_the_rest_of_the_backlog_for_the_next_start(store: EventStore, tmp_path: Path) -> None:
    await store.insert([event(i) for i in range(200)])

    class Slow(PickyEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            import time

            time.sleep(0.02)
            return super().encode(texts)

    backlog, ready = backlog_for(store, Slow(), tmp_path / "i.faiss", batch=8)
    assert await backlog.load()
    await backlog.start()
    async with asyncio.timeout(10):
        while backlog.embedded < 16:
            await asyncio.sleep(0.01)
    await backlog.close()
    await ready[0].index.save(tmp_path / "i.faiss")
    total, embedded = vector_rows(store.path)
    assert total == 200 and 16 <= embedded < 200 and len(ready[0].index) == embedded
    await close_parts(ready)
    again, ready2 = backlog_for(store, PickyEmbedder(), tmp_path / "i.faiss")
    assert await again.load()
    assert ready2[0].report.startswith("loaded")  # the saved index matches what SQLite has vectors for
    await again.start()
    assert again.pending == 200 - embedded
    async with asyncio.timeout(20):
        await again.wait_idle()
    assert vector_rows(store.path) == (200, 200) and len(ready2[0].index) == 200
    await again.close()
    await close_parts(ready2)


async def test_reads_never_wait_behind_a_write(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "m.sqlite3", busy_timeout=3.0)
    await store.insert([event(i) for i in range(5)])
    ingestor = Ingestor(store, outage=outage())
    ingestor.start()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the writer's next transaction waits for this lock
    try:
        writing = asyncio.create_task(ingestor.accept(event(5)))
        await asyncio.sleep(0.2)  # the writer's thread is now inside BEGIN IMMEDIATE, waiting
        rows = await store.select(None, Filters())
        found = await store.fts_search("number 3", None, Filters(), limit=1)
        # Answered from the last commit while the write is still waiting: questions have their own connection.
        assert len(rows) == 5 and len(found) == 1 and not writing.done()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (await writing).id == 6
    await ingestor.close()
    await store.close()
