"""A daemon as a cluster replica: its id in its handle's replica group, joining the group, and starting the
events stream's applier, acceptor and vectors feed (docs/scaling.md).

:class:`ReplicaMethods` is mixed into :class:`memory_agent.daemon.MemoryDaemon` (as ``mesh`` mixes room and
discovery calls into ``AsyncAgent``); the functions are pure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
import time
from typing import TYPE_CHECKING

from memory_agent.cluster.applier import Applier
from memory_agent.cluster.forget import StreamForgetter
from memory_agent.cluster.stream import StreamAcceptor, StreamLimits, ensure_stream
from memory_agent.cluster.vectors import VectorFeed, ensure_vector_stream
from mesh.access import jetstream
from mesh.errors import HandleTaken

if TYPE_CHECKING:
    from memory_agent.backlog import EmbeddingBacklog
    from memory_agent.config import Config
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.errors import StorageLost
    from memory_agent.health import Outage
    from memory_agent.ingest import Committed
    from memory_agent.retention import Eraser
    from memory_agent.store.events import EventStore
    from mesh import AsyncAgent

__all__ = ["ReplicaMethods", "explain_taken", "replica_id"]

log = logging.getLogger("memory_agent.daemon")


class ReplicaMethods:
    """The cluster start-up of :class:`memory_agent.daemon.MemoryDaemon` (its attributes, declared here)."""

    _applier: Applier | None
    _stream_acceptor: StreamAcceptor | None
    _vector_feed: VectorFeed | None
    _backlog: EmbeddingBacklog | None
    _batcher: BatchingEmbedder | None
    _storage: Outage
    _stream_outage: Outage
    _replica_id: str
    _stopping: asyncio.Event
    model_name: str

    def _on_committed(self, committed: Committed) -> None:
        raise NotImplementedError

    async def _forgotten(self, count: int) -> None:
        raise NotImplementedError

    def _lose_storage(self, lost: StorageLost) -> None:
        raise NotImplementedError

    async def _start_cluster(self, cfg: Config, agent: AsyncAgent, store: EventStore,
                             eraser: Eraser) -> tuple[StreamAcceptor, StreamForgetter]:
        """Create the events stream if missing, start applying it, accept into it (docs/scaling.md)."""
        c = cfg.cluster
        js = jetstream(agent)
        last = await ensure_stream(js, c.stream, StreamLimits(replicas=c.stream_replicas, max_age=c.max_age,
                                                               max_bytes=c.max_bytes), handle=cfg.handle)
        self._applier = Applier(
            js, store, eraser, stream=c.stream, outage=self._storage, batch=c.apply_batch,
            # replicas sharing the handle each need a consumer of their own: apply_<handle>_<replica id>
            handle=f"{cfg.handle}_{self._replica_id}" if self._replica_id else cfg.handle,
            retry_cap=cfg.ingest.retry_max_delay, on_committed=self._on_committed, on_forgotten=self._forgotten,
            on_lost=self._lose_storage)
        feed = self._vector_feed
        if feed is not None:  # reading vectors before applying: a new replica takes them as it catches up
            await ensure_vector_stream(js, c.vector_stream, events_stream=c.stream, replicas=c.stream_replicas,
                                       max_age=c.max_age, handle=cfg.handle)
            assert self._backlog is not None
            await feed.start(js, empty=await store.last_id() == 0,
                             since=self._backlog.oldest_received_at or await store.last_received_at())
        await self._applier.start()
        self._stream_acceptor = StreamAcceptor(js, stream=c.stream, outage=self._stream_outage, holds=store,
                                               on_accepted=feed.accepted if feed is not None else None)
        log.info("cluster replica @%s%s: reports acknowledged once the events stream %s (R%d, at %d) has them",
                 cfg.handle, f" (replica {self._replica_id} of its group)" if self._replica_id else "", c.stream,
                 c.stream_replicas, last)
        return self._stream_acceptor, StreamForgetter(self._stream_acceptor, self._applier)

    def _make_vector_feed(self, cfg: Config) -> VectorFeed:
        """The replica's side of the vectors stream (embed once, docs/scaling.md); started with the cluster."""
        c = cfg.cluster

        def model() -> str:
            return self._backlog.model if self._backlog is not None else self.model_name

        def dim() -> int:
            return self._batcher.dim if self._batcher is not None else 0

        def nudge() -> None:
            if self._backlog is not None:
                self._backlog.nudge()

        return VectorFeed(stream=c.vector_stream, events_stream=c.stream, handle=cfg.handle, model=model, dim=dim,
                          wait=c.vector_wait, on_vectors=nudge)

    async def _wait_replica_id_free(self, agent: AsyncAgent, wait: float) -> None:
        """Before this replica touches its events-stream consumer (named after its replica id), make sure no
        live member of the group has its id: two replicas with one id would split that consumer's entries
        between them. A crashed predecessor's entry expires within 3 heartbeat intervals (one that closed left
        at once), so this waits up to ``wait`` seconds; raises HandleTaken naming the setting to fix."""
        deadline = time.monotonic() + wait
        warned = False
        while self._replica_id in (await agent.introspect(agent.handle)).replicas:
            if time.monotonic() >= deadline or self._stopping.is_set():
                raise HandleTaken(agent.handle, f"a live replica of @{agent.handle} already has replica_id "
                                  f"{self._replica_id!r}; set a distinct [cluster] replica_id "
                                  "(MEMORY_AGENT_CLUSTER__REPLICA_ID) on each replica")
            if not warned:
                log.warning("@%s: a live replica already has replica_id %s (a crashed predecessor keeps it until its "
                            "heartbeat expires); waiting up to %.0f s", agent.handle, self._replica_id, wait)
                warned = True
            await asyncio.sleep(1.0)


def replica_id(cfg: Config) -> str:
    """``[cluster] replica_id``, else ``<hostname>-<8 hex of the resolved data_dir>``: stable across restarts
    (so a restarted replica takes its own member entry and events-stream consumer back), and distinct for
    two replicas on one host (their data directories differ)."""
    if cfg.cluster.replica_id:
        return cfg.cluster.replica_id
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:55] or "host"
    return f"{host}-{hashlib.sha256(str(cfg.data_dir.resolve()).encode()).hexdigest()[:8]}"


def explain_taken(exc: HandleTaken, cfg: Config) -> HandleTaken:
    """HandleTaken with what to change in this daemon's configuration."""
    keyed = bool(cfg.cluster.enabled and cfg.cluster.replica_key.get_secret_value())
    if exc.reason and "replica_key" in exc.reason and "another replica_key" in exc.reason:
        fix = ("every replica of @{h} needs the same [cluster] replica_key (MEMORY_AGENT_CLUSTER__REPLICA_KEY); "
               "this one's differs")
    elif exc.reason and "replica group" in exc.reason and not keyed:
        fix = ("@{h} is served by a replica group: to join it set [cluster] enabled = true and its replica_key "
               "(MEMORY_AGENT_CLUSTER__REPLICA_KEY); to run apart, set another handle")
    elif exc.reason and "replica_id" in exc.reason:
        fix = "set a distinct [cluster] replica_id (MEMORY_AGENT_CLUSTER__REPLICA_ID) on each replica"
    elif keyed:
        fix = ("@{h} is held by a single @memory (not a replica group): stop it, or give this replica group "
               "another handle")
    else:
        fix = "another @memory holds @{h}: stop it, or set another handle (each replica its own, or a replica_key)"
    detail = f"{exc.reason}; {fix}" if exc.reason else fix
    return HandleTaken(exc.handle, detail.format(h=cfg.handle))
