"""Batched ingest: many reports in flight become one encode call and one SQLite transaction.

Each report handler awaits :meth:`Ingestor.ingest`; a single worker task takes everything queued (up to
``max_batch``), embeds the texts in one call off the event loop, stores rows and vectors in one
transaction (SQLite is the source of truth) and only then adds the vectors to FAISS. A crash between
the two leaves the FAISS file behind SQLite, which :func:`memory_agent.index.open_index` detects and
repairs at the next start. Nothing is acknowledged on the mesh before its row is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from memory_agent.errors import MemoryAgentError
from memory_agent.models import InsertResult, NewEvent

log = logging.getLogger(__name__)


class IngestStore(Protocol):
    async def find_messages(self, message_ids: Sequence[str]) -> dict[str, int]: ...

    async def insert(
        self, events: Sequence[NewEvent], vectors: np.ndarray, *, model: str
    ) -> list[InsertResult]: ...


class IngestIndex(Protocol):
    async def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...


class TextEmbedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class IngestClosed(MemoryAgentError):
    """The ingestor is shutting down; the report stays unacknowledged and is redelivered."""


class Ingestor:
    """Owns the ingest worker. ``on_stored`` sees each batch of newly stored events (not duplicates)."""

    def __init__(
        self,
        store: IngestStore,
        index: IngestIndex,
        embedder: TextEmbedder,
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

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="memory-ingest")

    async def ingest(self, event: NewEvent) -> InsertResult:
        """Store one event (embedding it in a batch with others); a known ``message_id`` returns its first id.

        Raises IngestClosed during shutdown, or the storage/embedding error of its batch.
        """
        if self._closing:
            raise IngestClosed("ingest is shutting down; the report will be redelivered")
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
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._store_batch(batch)
            if self._closing:
                return

    async def _store_batch(self, batch: list[tuple[NewEvent, asyncio.Future[InsertResult]]]) -> None:
        started = time.perf_counter()
        try:
            # Redelivered reports are answered from SQLite without embedding them again.
            known = await self._store.find_messages([event.message_id for event, _ in batch])
            for event, future in batch:
                if event.message_id in known and not future.done():
                    future.set_result(InsertResult(id=known[event.message_id], duplicate=True))
            self.duplicates += sum(1 for event, _ in batch if event.message_id in known)
            batch = [(event, future) for event, future in batch if event.message_id not in known]
            if not batch:
                return
            events = [event for event, _ in batch]
            vectors = await self._embedder.embed([e.text for e in events])
            results = await self._store.insert(events, vectors, model=self._model)
            fresh = [i for i, r in enumerate(results) if not r.duplicate]
            if fresh:
                ids = np.array([results[i].id for i in fresh], dtype=np.int64)
                await self._index.add(ids, vectors[fresh])
        except Exception as exc:
            log.error("ingest batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.stored += len(fresh)
        self.duplicates += len(results) - len(fresh)
        log.debug("stored %d of %d reports in %.1f ms", len(fresh), len(batch), (time.perf_counter() - started) * 1000)
        if self._on_stored is not None and fresh:
            self._on_stored([events[i] for i in fresh])
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
