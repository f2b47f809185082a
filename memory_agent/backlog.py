"""Embedding behind ingest: stored rows without a vector get one, in id order, in batches.

Reports are acknowledged once committed (:mod:`memory_agent.ingest`); the vector comes later. The
:class:`EmbeddingBacklog` worker reads the next ``batch`` rows of the backlog (the rows with no vector
and no embedding error, in id order, from the partial index ``events_backlog``), embeds their texts as
background work (questions' embeddings go first, :mod:`memory_agent.embedding.batching`), writes the
vectors to SQLite (only into rows still without one) and then adds them to FAISS. A restart resumes
where it stopped: the backlog is whatever SQLite says has no vector. A crash after the SQLite write
leaves FAISS behind, which :func:`memory_agent.index.repair.open_index` repairs at the next start; a
crash before it leaves the rows in the backlog. No row is written twice.

The worker also owns the model's availability (the daemon degrades, it does not stop):

* the model fails to load: ``unavailable``; reports are still stored and answered from SQLite and FTS5;
  loading is tried again every ``retry_interval`` seconds (and at every start);
* every encode fails: ``failing``; tried again every ``retry_interval`` seconds;
* one text makes its batch fail: the batch is embedded one text at a time; a text that fails alone while
  the model still embeds others (or a probe) is marked (``embedding_error``) and left out of the backlog:
  it stays found by filters and words.

Storage errors while reading or writing back are the shared storage :class:`~memory_agent.health.Outage`:
the worker waits with a growing delay and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from memory_agent.errors import ConfigError, EmbedderClosed, VectorModelMismatch, internal_error_id
from memory_agent.health import EmbeddingState, Outage, retry_delay
from memory_agent.store.faults import transient_cause

if TYPE_CHECKING:
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.store.events import EventStore

__all__ = ["DenseParts", "EmbeddingBacklog", "VectorSource"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A text the model surely embeds, to tell a text the model cannot embed from a model that embeds nothing.
_PROBE = "probe"


@dataclass(frozen=True, slots=True)
class DenseParts:
    """The loaded model (behind its batching front) and the FAISS index opened for it; ``report`` says
    how the index was opened (loaded, repaired, rebuilt)."""

    embedder: BatchingEmbedder
    index: AsyncIndex
    report: str


class VectorSource(Protocol):
    """Vectors computed elsewhere (a cluster's other replicas, :class:`memory_agent.cluster.vectors.VectorFeed`):
    the backlog takes them instead of embedding, holds an event for a bounded time while its vector may
    still come, and hands on the vectors it computes itself."""

    def take(self, ids: np.ndarray, *, model: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Those of ``ids`` ((n,) int64, ascending) with a vector of ``model``: ``(ids (m,), (m, dim) float32)``."""
        ...

    def hold_until(self, event: int) -> float | None:
        """``time.monotonic()`` until which to wait for ``event``'s vector; None: embed it now."""
        ...

    def embedded(self, ids: np.ndarray, vectors: np.ndarray, *, model: str) -> None:
        """This backlog embedded (and stored) ``ids`` as ``vectors`` with ``model``."""
        ...

    def settled(self, upto: int) -> None:
        """Every event up to id ``upto`` has its vector (or was deleted or marked unembeddable)."""
        ...


class _Stopped(Exception):
    """The backlog is closing (or the embedder closed under it)."""


class EmbeddingBacklog:
    """Embeds the rows committed without a vector; see the module docstring.

    ``open_dense()`` loads the model and opens its index (raising ``ConfigError`` when the model cannot
    load); ``on_ready(parts)`` is told each time it succeeds. ``vector_lock`` is held while vectors go to
    SQLite and FAISS (the eraser holds it while deleting, so a deleted row's vector is never added back).
    ``storage`` is the shared storage outage. ``clock``: seconds since the epoch, UTC. ``source``: vectors
    computed elsewhere, taken before embedding (a cluster replica's :class:`VectorSource`).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        open_dense: Callable[[], Awaitable[DenseParts]],
        on_ready: Callable[[DenseParts], None],
        storage: Outage,
        vector_lock: asyncio.Lock,
        model: str,
        batch: int = 256,
        retry_interval: float = 60.0,
        retry_cap: float = 15.0,
        on_embedded: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        source: VectorSource | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._open_dense = open_dense
        self._on_ready = on_ready
        self._storage = storage
        self._lock = vector_lock
        self._batch = batch
        self._retry_interval = retry_interval
        self._retry_cap = retry_cap
        self._on_embedded = on_embedded
        self._clock = clock
        self.model = model
        self.dense: DenseParts | None = None
        self.state: EmbeddingState = "loading"
        self.error = ""
        self._model_outage = Outage(
            "embedding model", logger=log, clock=clock,
            impact=f"@memory runs degraded: reports are stored and questions answered from SQLite and FTS5 "
                   f"(no semantic search); the backlog is embedded once the model works (tried again every "
                   f"{retry_interval:g} s and at every start)")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self.pending = 0
        self._added_meanwhile = 0
        self.oldest_received_at: float | None = None
        self.embedded = 0
        self.taken = 0
        self.failed = 0
        self.batches = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def load(self) -> bool:
        """Try once to load the model and open its index; True when it worked. ``VectorModelMismatch``
        (SQLite holds vectors of another model) propagates: that is a configuration to fix, not an outage."""
        try:
            parts = await self._open_dense()
        except VectorModelMismatch:
            raise
        except Exception as exc:  # any load failure degrades; ConfigError says what is wrong
            self.state = "unavailable"
            self.error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            self._model_outage.failed(self.error if isinstance(exc, ConfigError) else "it failed to load",
                                      None if isinstance(exc, ConfigError) else exc)
            return False
        self.dense = parts
        self.model = parts.embedder.name
        self.state, self.error = "ok", ""
        self._model_outage.recovered()
        self._on_ready(parts)
        return True

    async def start(self) -> None:
        """Count the backlog, then run the worker (after :meth:`load` was tried once)."""
        await self.resync()
        if self.pending:
            log.info("embedding backlog: %d stored events without a vector%s", self.pending,
                     "" if self.dense is not None else " (embedded once the model loads)")
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="memory-embedding-backlog")

    async def close(self) -> None:
        """Stop the worker; a batch being embedded is dropped (its rows stay in the backlog). Idempotent."""
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def wait_idle(self) -> None:
        """Return once the worker found the backlog empty (with nothing committed since)."""
        await self._idle.wait()

    def nudge(self) -> None:
        """Look at the backlog again now (vectors arrived from the :class:`VectorSource`)."""
        self._wake.set()

    def added(self, count: int, received_at: float) -> None:
        """``count`` rows were committed without a vector (the oldest received at ``received_at``)."""
        self.pending += count
        self._added_meanwhile += count
        self._idle.clear()
        if self.oldest_received_at is None:
            self.oldest_received_at = received_at
        self._wake.set()

    async def resync(self) -> None:
        """Set :attr:`pending` and :attr:`oldest_received_at` from SQLite (exact; a cost in proportion to the
        backlog)."""
        backlog = await self._store.backlog()
        self.pending, self.oldest_received_at, self.failed = backlog.count, backlog.oldest_received_at, backlog.failed

    # --- the worker -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            if self.dense is None:
                await asyncio.sleep(self._retry_interval)
                try:
                    if await self.load():
                        log.info("embedding model %s loaded: embedding the backlog of %d events", self.model,
                                 self.pending)
                except VectorModelMismatch as exc:
                    self.state, self.error = "unavailable", str(exc)
                    self._model_outage.failed(str(exc))
                continue
            self._wake.clear()  # rows committed from here on wake the next round
            try:
                drained = await self._drain(self.dense)
            except _Stopped:
                return
            except Exception:  # a bug, or storage gone: keep the daemon up, try again later
                log.exception("the embedding backlog worker failed; retrying in %g s", self._retry_interval)
                drained = False
            if drained is False:  # the model embeds nothing: try again later
                await asyncio.sleep(self._retry_interval)
                continue
            if drained is True:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):  # events held for their vectors: until one is due, or woken
                async with asyncio.timeout(max(drained - time.monotonic(), 0.01)):
                    await self._wake.wait()

    async def _drain(self, dense: DenseParts) -> bool | float:
        """Embed until the backlog is empty (True), the model fails on everything (False), or only events
        held for a vector from the :class:`VectorSource` are left (the ``time.monotonic()`` when the first
        is due)."""
        after = 0
        held: float | None = None
        source = self._source
        upto = await self._storage_retry(self._store.last_id) if source is not None else 0
        while not self._closing:
            self._added_meanwhile = 0
            ids, texts, received = await self._storage_retry(
                functools.partial(self._store.unembedded, after=after, limit=self._batch))
            if not len(ids):
                if held is not None:
                    return held
                self.pending = self._added_meanwhile  # committed after this read began: the next round's
                if source is not None:
                    source.settled(upto)
                if not self.pending:
                    self.oldest_received_at = None
                    self._idle.set()
                return True
            self.oldest_received_at = received
            after = int(ids[-1])
            if source is not None:
                ids, texts, due = await self._take(dense, source, ids, texts)
                if due is not None:
                    held = due if held is None else min(held, due)
                if not len(ids):
                    await asyncio.sleep(0)
                    continue
            good = await self._embed(dense, ids, texts)
            if good is None:
                return False
            ok_ids, vectors, bad = good
            if bad:
                await self._storage_retry(functools.partial(self._mark, bad))
            written = await self._storage_retry(functools.partial(self._write, dense, ok_ids, vectors))
            self.batches += 1
            self._wrote(len(written), len(bad))
            if source is not None and len(written):
                source.embedded(written, vectors[np.searchsorted(ok_ids, written)], model=dense.embedder.name)
            await asyncio.sleep(0)
        raise _Stopped()

    def _wrote(self, written: int, bad: int = 0) -> None:
        self.embedded += written
        self.pending = max(self.pending - written - bad, 0)
        if self._on_embedded is not None and written:
            self._on_embedded(written)

    async def _take(self, dense: DenseParts, source: VectorSource, ids: np.ndarray,
                    texts: list[str]) -> tuple[np.ndarray, list[str], float | None]:
        """Store the vectors ``source`` has for ``ids``; returns the rows to embed now and when the first
        row held for its vector is due (None: none held)."""
        got, vectors = source.take(ids, model=dense.embedder.name, dim=dense.embedder.dim)
        if len(got):
            written = await self._storage_retry(functools.partial(self._write, dense, got, vectors))
            self.taken += len(written)
            self._wrote(len(written))
        now = time.monotonic()
        keep: list[int] = []
        due: float | None = None
        taken = set(got.tolist())
        for row, event in enumerate(ids.tolist()):
            if event in taken:
                continue
            until = source.hold_until(event)
            if until is not None and until > now:
                due = until if due is None else min(due, until)
                continue
            keep.append(row)
        return ids[keep], [texts[r] for r in keep], due

    async def _embed(self, dense: DenseParts, ids: np.ndarray,
                     texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]] | None:
        """Vectors of the batch: ``(ids, vectors, [(bad id, reason)])``; None when the model embeds nothing."""
        try:
            vectors = await dense.embedder.embed(texts, background=True)
        except EmbedderClosed:
            raise _Stopped() from None
        except Exception as exc:
            log.warning("embedding a backlog batch of %d (ids %d..%d) failed (%s: %s); embedding them one at a "
                        "time", len(ids), int(ids[0]), int(ids[-1]), type(exc).__name__, exc)
            return await self._embed_alone(dense, ids, texts, exc)
        if self.state == "failing":
            self.state, self.error = "ok", ""
            self._model_outage.recovered()
        return ids, vectors, []

    async def _embed_alone(self, dense: DenseParts, ids: np.ndarray, texts: list[str],
                           first: Exception) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]] | None:
        good_ids: list[int] = []
        rows: list[np.ndarray] = []
        bad: list[tuple[int, BaseException]] = []
        for event_id, text in zip(ids.tolist(), texts, strict=True):
            try:
                rows.append((await dense.embedder.embed([text], background=True))[0])
                good_ids.append(int(event_id))
            except EmbedderClosed:
                raise _Stopped() from None
            except Exception as exc:
                bad.append((int(event_id), exc))
        if bad and not good_ids:
            try:
                await dense.embedder.embed([_PROBE], background=True)
            except EmbedderClosed:
                raise _Stopped() from None
            except Exception as exc:
                self.state = "failing"
                self.error = f"{type(exc).__name__}: {exc}"
                self._model_outage.failed("every encode fails", exc)
                return None
        marked: list[tuple[int, str]] = []
        for event_id, failure in bad:
            error_id = internal_error_id()
            log.error("event #%d cannot be embedded (error %s): %s: %s; it stays stored and found by filters and "
                      "words, without a vector", event_id, error_id, type(failure).__name__, failure)
            marked.append((event_id, f"{error_id} {type(failure).__name__}"))
        if self.state == "failing" and good_ids:
            self.state, self.error = "ok", ""
            self._model_outage.recovered()
        vectors = np.vstack(rows) if rows else np.zeros((0, dense.embedder.dim), dtype=np.float32)
        return np.array(good_ids, dtype=np.int64), vectors, marked

    async def _mark(self, bad: list[tuple[int, str]]) -> None:
        for event_id, reason in bad:
            self.failed += await self._store.mark_unembeddable([event_id], reason)

    async def _write(self, dense: DenseParts, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """SQLite first (the source of truth), then FAISS, only for the rows SQLite took (returned, ascending)."""
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        async with self._lock:
            written = await self._store.set_vectors(ids, vectors, model=dense.embedder.name)
            if len(written):
                rows = np.searchsorted(ids, written)
                await dense.index.add(written, vectors[rows])
        return written

    async def _storage_retry(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` until it works, waiting with a growing delay while storage is unavailable."""
        attempt = 0
        while True:
            if self._closing:
                raise _Stopped()
            try:
                result = await step()
            except Exception as exc:
                cause = transient_cause(exc)
                if cause is None:
                    raise
                self._storage.failed(cause, exc)
                await asyncio.sleep(retry_delay(attempt, cap=self._retry_cap))
                attempt += 1
                continue
            self._storage.recovered()
            return result

    def to_json(self) -> dict[str, Any]:
        """The backlog's figures for ``stats`` (in memory; :meth:`resync` first for exact counts)."""
        age = None if self.oldest_received_at is None else max(self._clock() - self.oldest_received_at, 0.0)
        return {
            "status": self.state,
            "model": self.model or None,
            "error": self.error or None,
            "backlog": self.pending,
            "backlog_age_s": None if age is None else round(age, 3),
            "embedded": self.embedded,
            "taken": self.taken,
            "failed": self.failed,
            "batches": self.batches,
        }
