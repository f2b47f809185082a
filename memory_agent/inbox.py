"""How full @memory's durable inbox is: the JetStream consumer's counts, polled in the background.

The counts live on the NATS server (``$JS.API.CONSUMER.INFO``), so reading them is a request: doing it
at scrape time would make ``/metrics`` wait on NATS. :class:`InboxWatcher` asks every ``interval``
seconds on a connection of its own (the agent's connection is left alone) and keeps the last answer;
the metrics read that (:mod:`memory_agent.metrics`). It uses the daemon's credentials and reply
prefix (``_INBOX.<handle>``), so a server whose permissions tie users to handles lets it read the
consumer (see examples/nats-server.conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from mesh import NatsAuth
from mesh.connection import connect
from mesh.constants import STREAM_NAME
from mesh.errors import MeshError
from mesh.handles import durable_name, reply_prefix
from mesh.tasks import cancel_and_wait

__all__ = ["InboxCounts", "InboxWatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxCounts:
    """One reading of the consumer: ``pending`` messages not yet delivered, ``ack_pending`` delivered and
    not yet acknowledged; ``at``: when it was read (``time.monotonic()`` seconds)."""

    pending: int
    ack_pending: int
    at: float


class InboxWatcher:
    """Polls the durable consumer of ``handle`` every ``interval`` s; :meth:`counts` gives the last reading.

    A reading older than three intervals (NATS down) counts as unknown, so a stale number is never
    exported. ``start()`` never raises for NATS trouble: the watcher keeps trying, quietly.
    """

    def __init__(self, servers: str, *, handle: str, auth: NatsAuth | None, interval: float = 5.0) -> None:
        self._servers = [s.strip() for s in servers.split(",") if s.strip()]
        self._handle = handle
        self._auth = auth
        self._interval = interval
        self._nc: NATS | None = None
        self._task: asyncio.Task[None] | None = None
        self._last: InboxCounts | None = None

    def counts(self) -> InboxCounts | None:
        """The last reading, or ``None`` when there is none or it is stale."""
        last = self._last
        if last is None or time.monotonic() - last.at > 3 * self._interval:
            return None
        return last

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memory-inbox-watcher")

    async def close(self) -> None:
        """Stop polling and close the connection; idempotent."""
        task, self._task = self._task, None
        # Cancelled until it ends: one that comes with a consumer_info reply is lost on 3.11 (mesh.tasks).
        failed = await cancel_and_wait(task)
        if failed is not None:
            log.error("the inbox watcher of @%s had failed", self._handle, exc_info=failed)
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, MeshError, OSError, TimeoutError) as exc:
                log.debug("reading the inbox of @%s failed: %s", self._handle, type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def _poll(self) -> None:
        if self._nc is None:
            options: dict[str, Any] = {
                "servers": self._servers, "name": f"mesh:{self._handle}:inbox-watcher",
                "max_reconnect_attempts": -1, "reconnect_time_wait": 1.0,
                "inbox_prefix": reply_prefix(self._handle),
            }
            if self._auth is not None:
                options.update(self._auth.connect_options())
            self._nc = await connect(options, on_error=self._on_error)
        info = await self._nc.jetstream().consumer_info(STREAM_NAME, durable_name(self._handle), timeout=2.0)
        self._last = InboxCounts(pending=int(info.num_pending or 0), ack_pending=int(info.num_ack_pending or 0),
                                 at=time.monotonic())

    async def _on_error(self, exc: Exception) -> None:
        log.debug("inbox watcher of @%s: NATS error %s", self._handle, type(exc).__name__)
