"""The async batching front that keeps the model off the event loop and coalesces concurrent requests."""

from __future__ import annotations

import asyncio
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from memory_agent.errors import ConfigError, EmbedderClosed, EmbedderError
from memory_agent.protocols import Embedder

__all__ = ["BatchingEmbedder"]


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass(slots=True)
class _Queue:
    requests: deque[_Request] = field(default_factory=deque)
    queued_texts: int = 0


class BatchingEmbedder:
    """Async front of an :class:`Embedder` that coalesces concurrent requests into few ``encode`` calls.

    One worker thread owns the model. While an ``encode`` runs, new requests queue; the next ``encode``
    takes every queued request, up to ``max_batch`` texts (a single larger request goes alone, whole).
    An error from ``encode`` is raised to exactly the callers whose texts were in that call.
    Counters: ``batches`` (encode calls), ``texts`` (texts encoded). ``await close()`` drains and stops
    (an embedder left open warns with a ``ResourceWarning``).
    """

    def __init__(self, embedder: Embedder, *, max_batch: int = 128) -> None:
        if max_batch < 1:
            raise ConfigError(f"embedder max_batch must be >= 1, got {max_batch}", key="embedding.max_batch")
        self.embedder = embedder
        self.max_batch = max_batch
        self.batches = 0
        self.texts = 0
        self._queue = _Queue()
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._closed = False

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_closed", True):
            _warn(f"BatchingEmbedder of {self.embedder.name!r} was never closed", ResourceWarning, stacklevel=1)

    @property
    def name(self) -> str:
        """The wrapped embedder's model name."""
        return self.embedder.name

    @property
    def dim(self) -> int:
        """The wrapped embedder's vector dimension."""
        return self.embedder.dim

    @property
    def pending(self) -> int:
        """Texts waiting for an encode call."""
        return self._queue.queued_texts

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised, computed on the worker thread.

        Raises whatever the embedder raised for the batch these texts were in, and
        ``EmbedderClosed`` after ``close()``.
        """
        if self._closed:
            raise EmbedderClosed(self.name)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request(list(texts), loop.create_future())
        self._queue.requests.append(request)
        self._queue.queued_texts += len(request.texts)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="memory_agent.embedding.embedders")
        return await request.future

    async def embed_query(self, text: str) -> np.ndarray:
        """``(dim,)`` float32, L2-normalised embedding of one query text (same path as ``embed``)."""
        return (await self.embed([text]))[0]

    def _take_batch(self) -> list[_Request]:
        queue = self._queue
        batch: list[_Request] = []
        size = 0
        while queue.requests:
            head = queue.requests[0]
            if batch and size + len(head.texts) > self.max_batch:
                break
            queue.requests.popleft()
            queue.queued_texts -= len(head.texts)
            if head.future.done():  # the caller was cancelled while queued
                continue
            batch.append(head)
            size += len(head.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Request] = []
        try:
            while self._queue.requests:
                batch = self._take_batch()
                if not batch:
                    continue
                texts = [t for request in batch for t in request.texts]
                try:
                    vectors = await loop.run_in_executor(self._executor, self.embedder.encode, texts)
                    vectors = np.asarray(vectors, dtype=np.float32)
                    if vectors.shape != (len(texts), self.dim):
                        raise EmbedderError(
                            f"embedder {self.name!r} returned shape {vectors.shape} "
                            f"for {len(texts)} texts, expected ({len(texts)}, {self.dim})",
                            model=self.name,
                        )
                except Exception as exc:
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    batch = []
                    continue
                self.batches += 1
                self.texts += len(texts)
                start = 0
                for request in batch:
                    end = start + len(request.texts)
                    if not request.future.done():
                        request.future.set_result(vectors[start:end])
                    start = end
                batch = []
        except asyncio.CancelledError:
            pending = batch + list(self._queue.requests)
            self._queue.requests.clear()
            self._queue.queued_texts = 0
            for request in pending:
                if not request.future.done():
                    request.future.cancel()
            raise

    async def close(self) -> None:
        """Finish queued requests, then stop the worker thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            await asyncio.shield(worker)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
