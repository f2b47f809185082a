"""Embed once: replicas share the vectors they compute on a companion stream (issue 15, item 2).

Every replica applies every report (:mod:`memory_agent.cluster.applier`), but only one needs to embed
it. The replica that embeds an event publishes its vector to the vectors stream (``MEMORY_VECTORS`` by
default: limits retention, the events stream's replica count, subject
``memory.vectors.<events stream>.<event id>``, ``Nats-Msg-Id`` = ``<event id>.<model>`` so the same
vector published by two replicas is stored once within the duplicate window). Every replica reads that
stream and its embedding backlog (:mod:`memory_agent.backlog`) takes a published vector instead of
embedding: the same write (SQLite, then FAISS) as a vector it computed.

Who embeds (the common case embeds each event once): **the replica that accepted the report**. Every
other replica holds the event in its backlog for at most ``wait`` seconds after it applied it (measured
on its own monotonic clock), taking the vector if it arrives meanwhile and embedding the event itself
otherwise, so nothing waits forever when the accepting replica died, lags, or runs another model. A
vector of another model or dimension is ignored (counted) and the replica embeds itself after the wait.
Events in the backlog at start (applied before a restart, or reported through ``publish-store``) are
held until ``wait`` seconds after the start.

Where a replica starts reading: a replica with an empty store from the stream's beginning (a new replica
catches up from the events stream plus the vectors, embedding nothing the stream holds a vector for);
otherwise from the receipt time of the oldest event it still has to embed (or of its last event),
minus :data:`CLOCK_MARGIN`: a vector is published after its event was received. Vectors are an
optimisation: one lost (a publish refused, a message missed while reconnecting) costs an embedding,
never an event.

Memory: vectors of other replicas read ahead of the backlog wait in a buffer of at most ``buffer``
vectors (reading pauses when it is full); those the backlog no longer needs (the event has a vector
already, or was deleted) are dropped once it is idle. A replica's own vectors are skipped on reading
(``Memory-By``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import numpy as np
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from memory_agent.cluster.codec import StreamFormatError, decode_vector, encode_vector
from memory_agent.cluster.stream import DUPLICATE_WINDOW, create_or_open, while_electing
from memory_agent.health import retry_delay
from mesh.tasks import cancel_and_wait

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["CLOCK_MARGIN", "VectorFeed", "VectorFeedStats", "ensure_vector_stream", "vector_subject"]

log = logging.getLogger(__name__)

#: Seconds read before the oldest event still to embed: clocks of replicas and servers may differ.
CLOCK_MARGIN = 300.0
#: Vector publishes in flight at once.
_PUBLISH_WINDOW = 256
#: Seconds close() waits for publishes in flight and the reader.
_CLOSE_WAIT = 5.0


def vector_subject(stream: str, event: int | str = "*") -> str:
    """``memory.vectors.<stream>.<event>``: the subject of event ``event``'s vector (``*``: any event),
    where ``stream`` is the events stream's name."""
    return f"memory.vectors.{stream}.{event}"


async def ensure_vector_stream(js: JetStreamContext, name: str, *, events_stream: str, replicas: int,
                               max_age: float = 0.0, handle: str = "memory") -> None:
    """Create the vectors stream ``name`` for ``events_stream`` unless it exists (R``replicas``, kept
    ``max_age`` seconds, 0 = forever). Raises ``ConfigError`` when JetStream does not answer within
    :data:`memory_agent.cluster.stream.START_PATIENCE` seconds or an existing stream of that name does not
    take the subject."""
    await create_or_open(js, StreamConfig(
        name=name, description=f"@memory vectors: embeddings of {events_stream}'s events, by event id",
        subjects=[vector_subject(events_stream, ">")], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        discard=DiscardPolicy.OLD, max_age=max_age or None, duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas), what="vectors stream", key="cluster.vector_stream", handle=handle)


@dataclass(slots=True)
class VectorFeedStats:
    """What the feed did: vectors ``published`` (``duplicates`` among them: another replica had),
    ``failed`` publishes, vectors ``received`` (read from the stream, this replica's own included), ``ignored`` (another model or dimension, or unreadable),
    ``taken`` by the backlog, ``dropped`` (no longer needed)."""

    published: int = 0
    duplicates: int = 0
    failed: int = 0
    received: int = 0
    ignored: int = 0
    taken: int = 0
    dropped: int = 0


class VectorFeed:
    """The replica's side of the vectors stream; the backlog's :class:`~memory_agent.backlog.VectorSource`.

    ``handle`` is this replica's (with a random suffix it names the vectors this process publishes, which
    it skips when they come back); ``model()`` names the
    model this replica embeds with, ``dim()`` its dimension (vectors of others are
    ignored); ``wait``: seconds an event accepted by another replica is held for its vector; ``on_vectors``
    is told when vectors arrive or an event becomes this replica's to embed (wakes the backlog).
    Made before the backlog starts (which may ask it already), ``await start(js, empty=..., since=...)``
    once JetStream is reachable, then ``await close()``.
    """

    def __init__(self, *, stream: str, events_stream: str, handle: str, model: Callable[[], str],
                 dim: Callable[[], int], wait: float = 5.0, buffer: int = 20_000, batch: int = 1024,
                 on_vectors: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._js: JetStreamContext | None = None
        self._stream = stream
        self._handle = handle
        # Unique per process: replicas may share a handle (a replica group), and a restart's old vectors
        # coming back are simply taken or dropped.
        self._origin = f"{handle}.{uuid.uuid4().hex[:8]}"
        self._events_stream = events_stream
        self._model = model
        self._dim = dim
        self._wait = wait
        self._capacity = buffer
        self._batch = batch
        self._on_vectors = on_vectors
        self._monotonic = monotonic
        self._buffer: dict[int, np.ndarray] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._mine: set[int] = set()
        self._runs: deque[tuple[int, int, float]] = deque()  # (first id, last id, applied at), ascending
        self._started_at = monotonic()
        self._sub: JetStreamContext.PullSubscription | None = None
        self._reader: asyncio.Task[None] | None = None
        self._publishes: set[asyncio.Task[None]] = set()
        self._window = asyncio.Semaphore(_PUBLISH_WINDOW)
        self._deliver: dict[str, Any] = {}
        self.stats = VectorFeedStats()

    async def start(self, js: JetStreamContext, *, empty: bool, since: float | None) -> None:
        """Start reading: from the stream's beginning when this replica's store is ``empty``, else from
        ``since`` (seconds since the epoch, UTC: receipt time of the oldest event still to embed) minus
        :data:`CLOCK_MARGIN`, else (nothing to embed) from new vectors only."""
        self._js = js
        self._started_at = self._monotonic()
        if empty:
            self._deliver = {"deliver_policy": DeliverPolicy.ALL}
        elif since is not None:
            start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(since - CLOCK_MARGIN, 0.0)))
            self._deliver = {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": start}
        else:
            self._deliver = {"deliver_policy": DeliverPolicy.NEW}
        await while_electing(self._subscribe, f"reading the vectors stream {self._stream}", key="cluster.vector_stream",
                             handle=self._handle)
        log.info("reading the vectors stream %s (%s); events accepted elsewhere wait up to %g s for their vector",
                 self._stream, self._deliver["deliver_policy"].value, self._wait)
        self._reader = asyncio.create_task(self._read(), name="memory-cluster-vectors")

    async def close(self) -> None:
        """Stop reading; publishes in flight get :data:`_CLOSE_WAIT` seconds to finish. Idempotent."""
        reader, self._reader = self._reader, None
        # Cancelled until it ends: a cancellation arriving as a fetch completes is lost on 3.11 (mesh.tasks).
        failed = await cancel_and_wait(reader, every=0.1)
        if failed is not None:
            log.error("reading the vectors stream %s had failed", self._stream, exc_info=failed)
        if self._publishes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await asyncio.gather(*self._publishes, return_exceptions=True)
            for task in self._publishes:
                task.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await self._sub.unsubscribe()
            self._sub = None

    # --- what the applier and the acceptor tell it ------------------------------------------------------

    def accepted(self, event: int) -> None:
        """This replica accepted event ``event`` (so it embeds it at once, and publishes its vector)."""
        self._mine.add(event)
        if self._on_vectors is not None:
            self._on_vectors()  # the backlog may hold it already (applied before the acknowledgement came)

    def applied(self, ids: Sequence[int]) -> None:
        """Events ``ids`` (ascending) were just committed here: the wait for their vectors starts now."""
        if len(ids):
            self._runs.append((int(ids[0]), int(ids[-1]), self._monotonic()))
            horizon = self._monotonic() - self._wait
            while self._runs and self._runs[0][2] < horizon:
                self._runs.popleft()

    # --- the backlog's VectorSource ---------------------------------------------------------------------

    def take(self, ids: np.ndarray, *, model: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The published vectors among ``ids`` (ascending int64) for ``model`` with ``dim`` floats:
        ``(ids found (m,) int64, vectors (m, dim) float32)``, removed from the buffer."""
        if not self._buffer or model != self._model():
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        found = [int(i) for i in ids.tolist() if int(i) in self._buffer]
        vectors = [self._buffer.pop(i) for i in found]
        for i in found:
            self._mine.discard(i)
        self._room_check()
        self.stats.taken += len(found)
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        return np.array(found, dtype=np.int64), np.vstack(vectors)

    def hold_until(self, event: int) -> float | None:
        """Until when (``time.monotonic()``) the backlog should wait for event ``event``'s vector; None to
        embed it now (this replica accepted it)."""
        if event in self._mine:
            return None
        runs = self._runs
        at = bisect.bisect_left(runs, event, key=lambda run: run[1])
        if at < len(runs) and runs[at][0] <= event:
            return runs[at][2] + self._wait
        return self._started_at + self._wait  # applied before this start: a bounded wait too

    def embedded(self, ids: np.ndarray, vectors: np.ndarray, *, model: str) -> None:
        """This replica embedded ``ids`` ((n,) int64) as ``vectors`` ((n, dim) float32) with ``model``:
        publish them (in the background: the backlog does not wait; a failed publish is logged)."""
        for i in ids.tolist():
            self._mine.discard(int(i))
        if self._js is None or self._reader is None:
            return
        task = asyncio.create_task(self._publish(ids.copy(), np.array(vectors, dtype=np.float32), model))
        self._publishes.add(task)
        task.add_done_callback(self._publishes.discard)

    def settled(self, upto: int) -> None:
        """Every event up to ``upto`` has its vector here (or was deleted): drop their buffered vectors."""
        stale = [i for i in self._buffer if i <= upto]
        for i in stale:
            del self._buffer[i]
        self._mine = {i for i in self._mine if i > upto}
        self.stats.dropped += len(stale)
        self._room_check()

    def to_json(self) -> dict[str, Any]:
        return {"stream": self._stream, "buffered": len(self._buffer), "wait_s": self._wait,
                "published": self.stats.published, "duplicates": self.stats.duplicates,
                "publish_failed": self.stats.failed, "received": self.stats.received,
                "ignored": self.stats.ignored, "taken": self.stats.taken, "dropped": self.stats.dropped}

    # --- publishing -------------------------------------------------------------------------------------

    async def _publish(self, ids: np.ndarray, vectors: np.ndarray, model: str) -> None:
        js = self._js
        assert js is not None

        async def one(event: int, vector: np.ndarray) -> None:
            body, headers = encode_vector(event, vector, model=model, by=self._origin)
            async with self._window:
                try:
                    ack = await js.publish(vector_subject(self._events_stream, event), body,
                                                 stream=self._stream, headers=headers, timeout=10)
                except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    self.stats.failed += 1
                    if self.stats.failed == 1 or self.stats.failed % 1000 == 0:
                        log.warning("publishing the vector of event %d to %s failed (%s: %s; %d so far): the other "
                                    "replicas embed it themselves", event, self._stream, type(exc).__name__, exc,
                                    self.stats.failed)
                    return
            if ack.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.published += 1

        await asyncio.gather(*(one(int(e), v) for e, v in zip(ids.tolist(), vectors, strict=True)))

    # --- reading ----------------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        assert self._js is not None
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60.0, **self._deliver,
                                description="@memory replica: reads vectors published by the others")
        self._sub = await self._js.pull_subscribe(vector_subject(self._events_stream, ">"), stream=self._stream,
                                                  config=config)

    def _room_check(self) -> None:
        if len(self._buffer) < self._capacity:
            self._room.set()

    async def _read(self) -> None:
        failures = 0
        while True:
            await self._room.wait()
            assert self._sub is not None
            try:
                msgs = await self._sub.fetch(self._batch, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                failures = 0
                continue
            except nats.errors.ConnectionClosedError:
                return
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                delay = retry_delay(failures, cap=15.0)
                failures += 1
                log.warning("reading the vectors stream %s failed (%s: %s); again in %.1f s", self._stream,
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                if failures >= 3:  # the server may have dropped the consumer: read again from where it stands
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                        await self._subscribe()
                continue
            failures = 0
            self._receive(msgs)

    def _receive(self, msgs: list[Msg]) -> None:
        model, dim = self._model(), self._dim()
        added = 0
        for msg in msgs:
            self.stats.received += 1
            try:
                entry = decode_vector(0, msg.data, msg.headers)
            except StreamFormatError as exc:  # named by its sequence (the metadata is parsed only here)
                self.stats.ignored += 1
                log.error("vectors stream message %d cannot be read: %s; ignored", msg.metadata.sequence.stream,
                          exc.reason)
                continue
            if entry.by == self._origin:
                continue  # this replica's own: stored here already
            if entry.model != model or len(entry.vector) != dim:
                self.stats.ignored += 1
                if self.stats.ignored == 1:
                    log.warning("vector of event %d is by %s (%d dims), not this replica's %s (%d): ignored; "
                                "this replica embeds such events itself", entry.event, entry.model,
                                len(entry.vector), model, dim)
                continue
            self._buffer[entry.event] = entry.vector
            added += 1
        if len(self._buffer) >= self._capacity:
            self._room.clear()
        if added and self._on_vectors is not None:
            self._on_vectors()
