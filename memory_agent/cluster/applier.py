"""A replica applies the events stream, in order, to its own SQLite + FTS5 (FAISS follows through the
embedding backlog, :mod:`memory_agent.backlog`).

Each replica reads the stream with its own durable pull consumer (``apply_<handle>``). Where it starts
is decided by its store, not by the server: at every start the consumer is created afresh from the
sequence after :meth:`EventStore.last_id <memory_agent.store.events.EventStore.last_id>` (the largest
id ever stored), so a replica whose data directory was emptied catches up from the stream's beginning,
and a restart resumes where its last commit ended. Re-applying an entry is harmless: a report whose
``message_id`` is stored is skipped, a forget deletes what it selects again.

Each fetched batch is applied as runs: consecutive reports in one transaction (ids = their stream
sequences), a forget on its own (:class:`memory_agent.retention.Eraser`), then the batch is acknowledged
(``AckAll`` on its last message). A crash between commit and acknowledgement only re-delivers what is
already stored.

Faults: storage unavailable (busy, locked, full disk): the batch is tried again with a growing delay
and nothing is acknowledged; the stream unreachable: the fetch is tried again (and the consumer
re-created if the server lost it); an entry this version cannot read, or a report that storage refuses
when tried alone: logged with its sequence and skipped (every replica would refuse it alike); the
database file gone: ``on_lost``, and applying stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from memory_agent.cluster.codec import ForgetEntry, ReportEntry, StreamFormatError, decode
from memory_agent.cluster.stream import stream_subject, while_electing
from memory_agent.errors import ConfigError, StorageLost
from memory_agent.health import Outage, retry_delay
from memory_agent.ingest import Committed
from memory_agent.store.faults import transient_cause

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from memory_agent.retention import Eraser
    from memory_agent.store.events import EventStore

__all__ = ["Applier", "durable_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds close() waits for the loop and the subscription to end.
_CLOSE_WAIT = 5.0

#: Reports in one run from which the run's FTS5 rows are written by one statement (``insert(bulk=True)``).
_BULK_RUN = 32

#: Forget results kept for the replica's own forget requests to read (by stream sequence).
_FORGETS_KEPT = 1024


def durable_name(handle: str) -> str:
    """``apply_<handle>``: the durable consumer through which the replica on ``handle`` applies the stream."""
    return f"apply_{handle}"


class Applier:
    """Applies the events stream ``stream`` to ``store`` through the durable consumer of ``handle``.

    ``applied_seq``: every entry up to this stream sequence is applied (committed here); ``lag``: entries
    in the stream after it, as of the last fetch. ``on_committed`` sees each committed run's new rows,
    ``on_forgotten(count)`` each forget that deleted events, ``on_lost`` the store disappearing.
    ``await start()`` (raises ``ConfigError`` when the stream is behind the store: it was recreated or
    purged, and ids would collide), then ``await close()``.
    """

    def __init__(
        self, js: JetStreamContext, store: EventStore, eraser: Eraser, *, stream: str, handle: str,
        outage: Outage, batch: int = 256, retry_cap: float = 15.0,
        on_committed: Callable[[Committed], None] | None = None,
        on_forgotten: Callable[[int], Awaitable[None]] | None = None,
        on_lost: Callable[[StorageLost], None] | None = None,
    ) -> None:
        self._js = js
        self._store = store
        self._eraser = eraser
        self._stream = stream
        self._handle = handle
        self._durable = durable_name(handle)
        self._outage = outage
        self._batch = batch
        self._retry_cap = retry_cap
        self._on_committed = on_committed
        self._on_forgotten = on_forgotten
        self._on_lost = on_lost
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Condition()
        self._forgets: dict[int, int] = {}
        self.applied_seq = 0
        self.lag = 0
        self.applied = 0
        self.skipped = 0
        self.batches = 0
        self.apply_seconds = 0.0

    async def start(self) -> None:
        self.applied_seq = await self._store.last_id()
        info = await while_electing(lambda: self._js.stream_info(self._stream),
                                    f"reading the events stream {self._stream}", key="cluster.stream",
                                    handle=self._handle)
        if info.state.last_seq < self.applied_seq:
            raise ConfigError(
                f"[cluster]: the events stream {self._stream} ends at {info.state.last_seq} but this replica's "
                f"store holds ids up to {self.applied_seq}: the stream was recreated or purged. Start this "
                "replica on an empty data_dir (it catches up from the stream), or import its events "
                "(docs/scaling.md)", key="cluster.stream")
        if info.state.first_seq > self.applied_seq + 1 and info.state.messages:
            log.warning("the events stream %s begins at %d, after this replica's %d: events %d..%d expired "
                        "from the stream (cluster.max_age) and are missing here", self._stream,
                        info.state.first_seq, self.applied_seq, self.applied_seq + 1, info.state.first_seq - 1)
        self.lag = max(int(info.state.last_seq) - self.applied_seq, 0)
        # The consumer's leader may have been on a server that is gone: the cluster elects another meanwhile.
        await while_electing(self._subscribe, f"creating the consumer {self._durable} on the events stream "
                             f"{self._stream}", key="cluster", handle=self._handle)
        log.info("applying the events stream %s from %d (%d behind) through consumer %s", self._stream,
                 self.applied_seq + 1, self.lag, self._durable)
        self._task = asyncio.create_task(self._run(), name="memory-cluster-applier")

    async def close(self) -> None:
        """Stop applying (a batch being committed finishes first: cancellation waits at the next fetch)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await self._sub.unsubscribe()
            self._sub = None

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        """Wait until ``applied_seq >= seq``, at most ``timeout`` seconds; True when it got there."""
        if self.applied_seq >= seq:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._advanced:
                await self._advanced.wait_for(lambda: self.applied_seq >= seq)
        return self.applied_seq >= seq

    def forgotten(self, seq: int) -> int | None:
        """Events the forget at ``seq`` deleted here, once applied (None before, or when long gone)."""
        return self._forgets.get(seq)

    def to_json(self) -> dict[str, Any]:
        return {"applied_seq": self.applied_seq, "lag": self.lag, "applied": self.applied,
                "skipped": self.skipped, "batches": self.batches, "apply_s": round(self.apply_seconds, 3),
                "consumer": self._durable, "stream": self._stream}

    # --- the loop ------------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        """(Re)create the durable consumer from the sequence after ``applied_seq``."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(self._stream, self._durable)
        config = ConsumerConfig(
            durable_name=self._durable, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.applied_seq + 1, ack_policy=AckPolicy.ALL, max_ack_pending=max(4 * self._batch, 1024),
            description="@memory replica: applies the events stream to its store")
        self._sub = await self._js.pull_subscribe(stream_subject(self._stream), durable=self._durable,
                                                  stream=self._stream, config=config)

    async def _run(self) -> None:
        failures = 0
        while True:
            assert self._sub is not None
            try:
                msgs = await self._sub.fetch(self._batch, timeout=1.0)
            except nats.errors.TimeoutError:
                self.lag = 0  # nothing pending
                failures = 0
                continue
            except TimeoutError:  # a pull that got no answer in time (nats-py's own wait): fetch again
                continue
            except nats.errors.ConnectionClosedError:
                log.info("the connection closed: applying the events stream %s stopped at %d", self._stream,
                         self.applied_seq)
                return
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                delay = retry_delay(failures, cap=self._retry_cap)
                failures += 1
                log.warning("fetching from the events stream %s failed (%s: %s); again in %.1f s", self._stream,
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                if failures >= 3:
                    with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, OSError):
                        await self._subscribe()  # the server may have lost the consumer
                continue
            failures = 0
            if not msgs:
                continue
            started = time.perf_counter()
            try:
                await self._apply(msgs)
            except StorageLost as lost:
                if self._on_lost is not None:
                    self._on_lost(lost)
                return
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await msgs[-1].ack()  # AckAll: the whole batch (a lost ack re-delivers what is stored)
            self.batches += 1
            self.apply_seconds += time.perf_counter() - started

    async def _apply(self, msgs: list[Msg]) -> None:
        run: list[ReportEntry] = []
        last = self.applied_seq
        for msg in msgs:
            meta = msg.metadata  # parsed from the reply subject on each access: once
            seq = int(meta.sequence.stream)
            self.lag = int(meta.num_pending)
            if seq <= last:
                continue  # delivered again: already applied
            last = seq
            try:
                entry = decode(seq, msg.data, msg.headers)
            except StreamFormatError as exc:
                self.skipped += 1
                log.error("%s; skipped", exc)
                continue
            if isinstance(entry, ReportEntry):
                run.append(entry)
                continue
            await self._commit(run)
            run = []
            await self._forget(entry)
        await self._commit(run)
        await self._advance(last)

    async def _advance(self, seq: int) -> None:
        if seq > self.applied_seq:
            async with self._advanced:
                self.applied_seq = seq
                self._advanced.notify_all()

    async def _commit(self, run: list[ReportEntry]) -> None:
        if not run:
            return
        # A long run (catching up) writes its FTS5 rows in one statement: half the cost of the per-row
        # trigger (EventStore.insert's bulk; docs/scaling.md "Catch-up").
        results = await self._storage_retry(
            lambda: self._store.insert([e.event for e in run], ids=[e.seq for e in run], bulk=len(run) >= _BULK_RUN))
        if results is None:  # refused: one at a time, to store the others
            if len(run) > 1:
                for entry in run:
                    await self._commit([entry])
                return
            self.skipped += 1
            log.error("events stream entry %d (report %s from @%s) refused by storage; skipped", run[0].seq,
                      run[0].event.message_id, run[0].event.from_handle)
            return
        self._store.check_on_disk()
        fresh = [i for i, r in enumerate(results) if not r.duplicate]
        self.applied += len(fresh)
        await self._advance(run[-1].seq)
        if fresh and self._on_committed is not None:
            self._on_committed(Committed(tuple(results[i].id for i in fresh), tuple(run[i].event for i in fresh)))

    async def _forget(self, entry: ForgetEntry) -> None:
        count = await self._storage_retry(lambda: self._eraser.forget(entry.request))
        self._store.check_on_disk()
        count = count or 0
        self._forgets[entry.seq] = count
        while len(self._forgets) > _FORGETS_KEPT:
            del self._forgets[next(iter(self._forgets))]
        log.warning("forget %d by @%s (%s) applied: %d events deleted", entry.seq, entry.by or "?",
                    entry.request.selector, count)
        await self._advance(entry.seq)
        if count and self._on_forgotten is not None:
            await self._on_forgotten(count)

    async def _storage_retry(self, step: Callable[[], Awaitable[T]]) -> T | None:
        """``step()``, tried again while storage is unavailable; None when it fails for another reason."""
        attempt = 0
        while True:
            try:
                result = await step()
            except Exception as exc:
                self._store.check_on_disk()  # StorageLost propagates
                cause = transient_cause(exc)
                if cause is None:
                    log.warning("applying the events stream failed (%s: %s)", type(exc).__name__, exc)
                    return None
                self._outage.failed(cause, exc)
                await asyncio.sleep(retry_delay(attempt, cap=self._retry_cap))
                attempt += 1
                continue
            self._outage.recovered()
            return result
