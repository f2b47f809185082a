"""Batched, pipelined ingest: many reports in flight become one encode call and one SQLite transaction.

Each report handler awaits :meth:`Ingestor.ingest`. A worker task takes everything queued (up to
``max_batch``), drops reports already stored (one query per batch: redeliveries are answered from
SQLite without embedding), and embeds the texts in one call off the event loop. The batch is then
committed by a second stage: rows and vectors in one SQLite transaction (the source of truth), then the
vectors into FAISS, then the callers are answered. The two stages overlap — batch N+1 is embedded
while batch N is committed — and commits happen one at a time, in batch order. A crash between SQLite
and FAISS leaves the FAISS file behind SQLite, which :func:`memory_agent.index.open_index` detects
and repairs at the next start. Nothing is acknowledged on the mesh before its row is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_agent.errors import IngestClosed
from memory_agent.types import InsertResult, NewEvent

__all__ = ["Ingestor"]

if TYPE_CHECKING:
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.store.events import EventStore

log = logging.getLogger(__name__)


class Ingestor:
    """Owns the ingest worker. ``on_stored`` sees each batch of newly stored events (not duplicates)."""

    def __init__(
        self,
        store: EventStore,
        index: AsyncIndex,
        embedder: BatchingEmbedder,
        *,
        model: str,
        max_batch: int = 128,
        on_stored: Callable[[Sequence[NewEvent]], Any] | None = None,
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self._model = model
        self._max_batch = max_batch
        self._on_stored = on_stored
        self._pending: list[tuple[NewEvent, asyncio.Future[InsertResult]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self.stored = 0
        self.duplicates = 0
        self.batches = 0

    @property
    def queued(self) -> int:
        """Reports waiting for the worker to take them into a batch (not yet embedded)."""
        return len(self._pending)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="memory-ingest")

    async def ingest(self, event: NewEvent) -> InsertResult:
        """Store one event (embedding it in a batch with others); a known ``message_id`` returns its first id.

        Raises IngestClosed during shutdown, or the storage/embedding error of its batch.
        """
        if self._closing:
            raise IngestClosed()
        future: asyncio.Future[InsertResult] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish what is queued, then stop the worker. Idempotent."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None

    async def _run(self) -> None:
        committing: asyncio.Task[None] | None = None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                    embedded = await self._embed_batch(batch)
                    if committing is not None:
                        await committing  # commits stay in batch order, one at a time
                        committing = None
                    if embedded is not None:
                        committing = asyncio.create_task(self._commit_batch(*embedded), name="memory-ingest-commit")
                if self._closing:
                    return
        finally:
            if committing is not None:
                await committing

    async def _embed_batch(
        self, batch: list[tuple[NewEvent, asyncio.Future[InsertResult]]]
    ) -> tuple[list[tuple[NewEvent, asyncio.Future[InsertResult]]], np.ndarray, float] | None:
        """Answer the already-stored reports and embed the rest; None when nothing is left to commit."""
        started = time.perf_counter()
        try:
            # Redelivered reports are answered from SQLite without embedding them again.
            known = await self._store.find_messages([event.message_id for event, _ in batch])
            if known:
                for event, future in batch:
                    if event.message_id in known and not future.done():
                        future.set_result(InsertResult(id=known[event.message_id], duplicate=True))
                self.duplicates += sum(1 for event, _ in batch if event.message_id in known)
                batch = [(event, future) for event, future in batch if event.message_id not in known]
            if not batch:
                return None
            vectors = await self._embedder.embed([event.text for event, _ in batch])
        except Exception as exc:
            self._fail(batch, exc)
            return None
        return batch, vectors, started

    async def _commit_batch(
        self, batch: list[tuple[NewEvent, asyncio.Future[InsertResult]]], vectors: np.ndarray, started: float
    ) -> None:
        events = [event for event, _ in batch]
        try:
            results = await self._store.insert(events, vectors, model=self._model)
            fresh = [i for i, r in enumerate(results) if not r.duplicate]
            if fresh:
                ids = np.array([results[i].id for i in fresh], dtype=np.int64)
                await self._index.add(ids, vectors[fresh])
        except Exception as exc:
            self._fail(batch, exc)
            return
        self.batches += 1
        self.stored += len(fresh)
        self.duplicates += len(results) - len(fresh)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("stored %d of %d reports in %.1f ms", len(fresh), len(batch), (time.perf_counter() - started) * 1000)
        if self._on_stored is not None and fresh:
            self._on_stored([events[i] for i in fresh])
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _fail(self, batch: list[tuple[NewEvent, asyncio.Future[InsertResult]]], exc: Exception) -> None:
        log.error("ingest batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
