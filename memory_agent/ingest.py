"""Accepting reports: a report is acknowledged once its row and its full-text entry are committed.

:class:`Ingestor` is the one acceptance step (:class:`memory_agent.protocols.Acceptor`): each report
handler awaits :meth:`Ingestor.accept`, which puts the report on a bounded queue (a full queue makes
the caller wait, so JetStream holds the rest: back-pressure, never a drop) and returns its
:class:`~memory_agent.types.InsertResult` once a writer task has committed it in SQLite with its FTS5
row, many reports per transaction. Nothing is embedded here: the rows join the embedding backlog
(:mod:`memory_agent.backlog`), so acknowledgement runs at the speed of SQLite, not of the model.
A report whose ``message_id`` is already stored (a redelivery) is answered with its first id.

What can go wrong, and what the caller sees:

* storage unavailable (busy, locked, disk full, I/O: :func:`memory_agent.store.faults.transient_cause`):
  ``StorageUnavailable``; the message stays unacknowledged and is tried again until storage is back
  (the outage is logged once, with its cause and, when it ends, its duration);
* a report that makes its transaction fail for another reason: the batch is retried one report at a
  time, the others are stored, and the one that still fails gets ``ReportRefused`` (an error reply, no
  redelivery);
* the database file deleted or replaced under the daemon: ``StorageLost`` for this and every later
  report (``on_lost`` stops the daemon); a batch committed into a file that is gone is never
  acknowledged.

In a cluster the acceptance point moves to "the replicated events stream has it" (issue 15): that is
another :class:`~memory_agent.protocols.Acceptor`, with the same results and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memory_agent.errors import (
    IngestClosed,
    InvalidArgument,
    ReportRefused,
    StorageLost,
    StorageUnavailable,
    internal_error_id,
)
from memory_agent.health import Outage
from memory_agent.store.faults import transient_cause
from memory_agent.types import InsertResult, NewEvent

__all__ = ["Committed", "Ingestor"]

if TYPE_CHECKING:
    from memory_agent.store.events import EventStore

log = logging.getLogger(__name__)

_Item = tuple[NewEvent, "asyncio.Future[InsertResult]"]


@dataclass(frozen=True, slots=True)
class Committed:
    """Newly stored events of one transaction (duplicates left out), with their ids, in id order."""

    ids: tuple[int, ...]
    events: tuple[NewEvent, ...]


class Ingestor:
    """The acceptance step of a single node: reports committed to SQLite (+FTS5), ``batch`` per transaction.

    ``queue``: reports waiting to be committed, at most (callers wait beyond). ``outage`` tracks storage
    availability (shared with the embedding backlog). ``on_committed`` sees each transaction's new rows;
    ``on_lost`` is told once when the database file disappears. ``start()``, then ``await close()``
    (finishes what is queued).
    """

    def __init__(
        self,
        store: EventStore,
        *,
        outage: Outage,
        queue: int = 1024,
        batch: int = 256,
        on_committed: Callable[[Committed], None] | None = None,
        on_lost: Callable[[StorageLost], None] | None = None,
    ) -> None:
        if queue < 1 or batch < 1:
            raise InvalidArgument("queue/batch", f"must be >= 1, not {queue}/{batch}")
        self._store = store
        self._outage = outage
        self._batch = batch
        self.capacity = queue
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue)
        self._on_committed = on_committed
        self._on_lost = on_lost
        self._closing = False
        self._lost: StorageLost | None = None
        self._writer: asyncio.Task[None] | None = None
        self.waiting = 0
        self.stored = 0
        self.duplicates = 0
        self.batches = 0
        self.refused = 0
        self.isolated_batches = 0

    @property
    def queued(self) -> int:
        """Reports in the queue or waiting for room in it."""
        return self._queue.qsize() + self.waiting

    @property
    def lost(self) -> StorageLost | None:
        """The ``StorageLost`` that stopped acceptance, if any."""
        return self._lost

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="memory-ingest-writer")

    async def accept(self, event: NewEvent) -> InsertResult:
        """Store ``event`` (with its FTS5 row) and return its id once committed; a ``message_id`` already
        stored returns its first id with ``duplicate=True``. Waits while the queue is full.

        Raises ``StorageUnavailable`` (transient: leave the message unacknowledged and try again later),
        ``ReportRefused`` (this report cannot be stored: answer with an error), ``StorageLost`` and
        ``IngestClosed`` (stop acknowledging).
        """
        if self._lost is not None:
            raise self._lost
        if self._closing:
            raise IngestClosed()
        future: asyncio.Future[InsertResult] = asyncio.get_running_loop().create_future()
        self.waiting += 1
        try:
            await self._queue.put((event, future))
        finally:
            self.waiting -= 1
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop the writer. Idempotent."""
        self._closing = True
        if self._writer is None:
            return
        if not self._writer.done():
            await self._queue.join()
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None
        while not self._queue.empty():  # put after the last commit (by a caller already waiting for room)
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(IngestClosed())

    def lose(self, lost: StorageLost) -> None:
        """Stop accepting: every queued and later report fails with ``lost`` (the file is gone)."""
        if self._lost is None:
            self._lost = lost
            log.critical("%s", lost)
            if self._on_lost is not None:
                self._on_lost(lost)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                live = [item for item in batch if not item[1].done()]  # a cancelled caller's report is not stored
                if live:
                    await self._commit(live)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                log.exception("ingest writer failed on a batch of %d", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Item]) -> None:
        if self._lost is not None:
            self._fail(batch, self._lost)
            return
        started = time.perf_counter()
        events = [event for event, _ in batch]
        try:
            results = await self._store.insert(events)
        except Exception as exc:
            await self._failed(batch, exc)
            return
        try:
            self._store.check_on_disk()  # committed into a file that is gone: never answer "stored"
        except StorageLost as lost:
            self.lose(lost)
            self._fail(batch, lost)
            return
        self._outage.recovered()
        fresh = [i for i, r in enumerate(results) if not r.duplicate]
        self.batches += 1
        self.stored += len(fresh)
        self.duplicates += len(results) - len(fresh)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("committed %d new of %d reports in %.1f ms", len(fresh), len(batch),
                      (time.perf_counter() - started) * 1000)
        if fresh and self._on_committed is not None:
            self._on_committed(Committed(tuple(results[i].id for i in fresh), tuple(events[i] for i in fresh)))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _failed(self, batch: list[_Item], exc: Exception) -> None:
        """A transaction failed: storage lost, storage unavailable, or one of the reports is bad."""
        try:
            self._store.check_on_disk()
        except StorageLost as lost:
            self.lose(lost)
            self._fail(batch, lost)
            return
        cause = transient_cause(exc)
        if cause is not None:
            since = self._outage.failed(cause, exc)
            self._fail(batch, StorageUnavailable(str(self._store.path), cause, since=since))
            return
        if len(batch) > 1:
            self.isolated_batches += 1
            log.warning("a transaction of %d reports failed (%s: %s); storing them one at a time to find the "
                        "report that fails it", len(batch), type(exc).__name__, exc)
            for item in batch:
                await self._commit([item])
            return
        event, future = batch[0]
        error_id = internal_error_id()
        self.refused += 1
        log.error("report %s from @%s refused by storage (error %s): %s: %s", event.message_id, event.from_handle,
                  error_id, type(exc).__name__, exc, exc_info=exc)
        if not future.done():
            future.set_exception(ReportRefused(error_id))

    @staticmethod
    def _fail(batch: Sequence[_Item], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
