"""The async front that keeps the model off the event loop: query embeddings jump the backlog's queue.

One worker thread owns the model and runs one ``encode`` call at a time. Requests wait in two lanes:
*queries* (a question's embedding, :meth:`BatchingEmbedder.embed_query`) and *background* work (the
embedding backlog, ``embed(..., background=True)``). Before each call the worker takes from the query
lane first, so a question waits for at most the one call already running, never for the backlog
queued behind it. Requests are cut into calls of at most ``max_batch`` texts and ``max_batch_chars``
characters: a long backlog batch becomes several calls, with queries slipping in between.

Background work also gives way to the messages being handled: with ``yield_to`` (the number of messages
in flight, reports being acknowledged and questions being answered), a background call waits while any
is in flight, for at most as long as the previous background call took. The model then shares the
cores with the acknowledgement and answering work at most half the time while both have work, and has
them all once they are idle: acknowledgement and answers first, embedding with the rest.

What the model reads is bounded: each text is cut to ``max_chars`` characters before it reaches the
tokenizer (the stored payload and text stay whole). The default bound is the model's maximum sequence
length in tokens (``embedder.max_tokens``: 256 for all-MiniLM-L6-v2) times :data:`CHARS_PER_TOKEN`, so
the cut never removes anything the model would have read except in texts averaging more than 16
characters per token (measured: at most 5.0; docs/benchmarks.md#design-truncation), while a 1 MB report
costs the tokenizer 4 KB of text. Together with ``max_batch_chars`` this bounds the memory of one call.
"""

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

__all__ = ["CHARS_PER_TOKEN", "DEFAULT_MAX_CHARS", "BatchingEmbedder", "max_chars_for"]

#: Characters per token assumed when bounding a text by the model's token limit: over 3 times the
#: largest average measured on LoCoMo dialogue, bench reports and this repository's text (5.0;
#: docs/benchmarks.md#design-truncation).
CHARS_PER_TOKEN = 16
#: The bound for an embedder that does not say how many tokens it reads.
DEFAULT_MAX_CHARS = 8192
# Seconds between looks at the messages in flight while background work gives way.
_YIELD_POLL = 0.005


def max_chars_for(embedder: Embedder) -> int:
    """Characters of a text worth sending to ``embedder``: ``max_tokens * CHARS_PER_TOKEN`` when it names
    its token limit (``max_tokens``), else :data:`DEFAULT_MAX_CHARS`."""
    tokens = getattr(embedder, "max_tokens", None)
    if isinstance(tokens, int) and tokens > 0:
        return tokens * CHARS_PER_TOKEN
    return DEFAULT_MAX_CHARS


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    taken: int = 0
    parts: list[np.ndarray] = field(default_factory=list)


class BatchingEmbedder:
    """Async front of an :class:`Embedder`: two lanes (queries first), calls of bounded size, texts clipped.

    See the module docstring. An error from ``encode`` is raised to exactly the callers whose texts were
    in that call (a background request cut into several calls fails as a whole). Counters: ``batches``
    (encode calls), ``texts`` (texts encoded), ``clipped`` (texts cut to ``max_chars``). ``await
    close()`` drains and stops (an embedder left open warns with a ``ResourceWarning``).
    Raises ``ConfigError`` for a bound below 1.
    """

    def __init__(self, embedder: Embedder, *, max_batch: int = 128, max_batch_chars: int = 65_536,
                 max_chars: int = 0, yield_to: Callable[[], int] | None = None) -> None:
        if max_batch < 1:
            raise ConfigError(f"embedder max_batch must be >= 1, got {max_batch}", key="embedding.max_batch")
        if max_batch_chars < 1 or max_chars < 0:
            raise ConfigError(f"embedder max_batch_chars must be >= 1 and max_chars >= 0, got {max_batch_chars}"
                              f" and {max_chars}", key="embedding.max_batch_chars")
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_batch_chars = max_batch_chars
        self.max_chars = max_chars or max_chars_for(embedder)
        self.batches = 0
        self.texts = 0
        self.clipped = 0
        self.yielded_s = 0.0
        self.yield_to = yield_to
        self._last_background_s = 0.0
        self._queries: deque[_Request] = deque()
        self._background: deque[_Request] = deque()
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
        """Texts waiting for an encode call, both lanes."""
        return sum(len(r.texts) - r.taken for lane in (self._queries, self._background) for r in lane)

    async def embed(self, texts: Sequence[str], *, background: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised, computed on the worker thread.

        ``background=True`` puts the texts behind every query (the embedding backlog). Raises whatever
        the embedder raised for a call these texts were in, and ``EmbedderClosed`` after ``close()``.
        """
        if self._closed:
            raise EmbedderClosed(self.name)
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request([self._clip(t) for t in texts], loop.create_future())
        (self._background if background else self._queries).append(request)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="memory_agent.embedding.encoder")
        return await request.future

    async def embed_query(self, text: str) -> np.ndarray:
        """``(dim,)`` float32, L2-normalised embedding of one query text, ahead of background work."""
        return (await self.embed([text]))[0]

    def _clip(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        self.clipped += 1
        return text[: self.max_chars]

    def _next_call(self) -> tuple[list[tuple[_Request, int, int]], bool]:
        """The slices ``(request, start, end)`` of the next encode call, and whether they are background work:
        queries first, then background; one lane per call, at most ``max_batch`` texts and
        ``max_batch_chars`` characters (at least one text)."""
        for lane in (self._queries, self._background):
            slices: list[tuple[_Request, int, int]] = []
            texts, chars = 0, 0
            while lane and texts < self.max_batch:
                request = lane[0]
                if request.future.done():  # the caller was cancelled, or an earlier call failed it
                    lane.popleft()
                    continue
                start = end = request.taken
                while end < len(request.texts) and texts < self.max_batch:
                    size = len(request.texts[end])
                    if texts and chars + size > self.max_batch_chars:
                        break
                    texts, chars, end = texts + 1, chars + size, end + 1
                if end == start:
                    break
                slices.append((request, start, end))
                request.taken = end
                if end < len(request.texts):
                    break
                lane.popleft()
            if slices:
                return slices, lane is self._background
        return [], False

    async def _give_way(self) -> None:
        """Before a background call: wait while messages are in flight and no query waits, at most as
        long as the previous background call took."""
        if self.yield_to is None or self._queries or not self._background:
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._last_background_s
        while self.yield_to() > 0 and not self._queries and loop.time() < deadline:
            await asyncio.sleep(_YIELD_POLL)
        self.yielded_s += loop.time() - started

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        call: list[tuple[_Request, int, int]] = []
        try:
            while True:
                await self._give_way()
                call, background = self._next_call()
                if not call:
                    return
                texts = [t for request, start, end in call for t in request.texts[start:end]]
                started = loop.time()
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
                    for request, _, _ in call:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    call = []
                    continue
                if background:
                    self._last_background_s = loop.time() - started
                self.batches += 1
                self.texts += len(texts)
                offset = 0
                for request, start, end in call:
                    request.parts.append(vectors[offset : offset + end - start])
                    offset += end - start
                    if end == len(request.texts) and not request.future.done():
                        parts = request.parts
                        request.future.set_result(parts[0] if len(parts) == 1 else np.concatenate(parts))
                call = []
        except asyncio.CancelledError:
            pending = [request for request, _, _ in call] + list(self._queries) + list(self._background)
            self._queries.clear()
            self._background.clear()
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
