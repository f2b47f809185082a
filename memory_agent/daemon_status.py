"""What the daemon says about itself: health (ready, degraded, not ready, and why), the status snapshot
that metrics and readiness read (no I/O), and ``{"op": "stats"}``.

:class:`StatusMethods` is mixed into :class:`memory_agent.daemon.MemoryDaemon`; the rule that turns a status
into readiness is in :mod:`memory_agent.status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory_agent import __version__
from memory_agent.health import Health, HealthStatus, StorageState
from memory_agent.status import DaemonStatus, EmbedderState, Phase

if TYPE_CHECKING:
    from memory_agent.backlog import EmbeddingBacklog
    from memory_agent.cluster import Applier, StreamAcceptor, VectorFeed
    from memory_agent.config import Config
    from memory_agent.embedding.batching import BatchingEmbedder
    from memory_agent.errors import StorageLost
    from memory_agent.health import Outage
    from memory_agent.inbox import InboxCounts, InboxWatcher
    from memory_agent.index.async_index import AsyncIndex
    from memory_agent.ingest import Ingestor
    from memory_agent.protocols import Clock
    from memory_agent.shared.service import SharedState
    from memory_agent.shared.vectors import VectorMemory
    from memory_agent.store.events import EventStore
    from mesh import AsyncAgent

__all__ = ["StatusMethods"]


class StatusMethods:
    """Health, status and stats of :class:`memory_agent.daemon.MemoryDaemon` (its attributes, declared here)."""

    config: Config
    nats_url: str
    model_name: str
    started_at: float
    _clock: Clock
    _phase: Phase
    _events: int
    _agent: AsyncAgent | None
    _store: EventStore | None
    _index: AsyncIndex | None
    _batcher: BatchingEmbedder | None
    _backlog: EmbeddingBacklog | None
    _ingestor: Ingestor | None
    _inbox: InboxWatcher | None
    _storage: Outage
    _stream_outage: Outage
    _failure: StorageLost | None
    _applier: Applier | None
    _stream_acceptor: StreamAcceptor | None
    _vector_feed: VectorFeed | None
    _replica_id: str
    _shared: SharedState | None
    _vectors: VectorMemory | None

    def health(self) -> Health:
        """Ready, degraded or not ready, with reasons and the backlog; from memory only (never waits)."""
        backlog = self._backlog
        storage: StorageState = "lost" if self._failure is not None else "unavailable" if self._storage.down else "ok"
        embedding = backlog.state if backlog is not None else "loading"
        reasons: list[str] = []
        if self._phase != "serving":
            reasons.append("not serving (starting or stopping)")
        if self._failure is not None:
            reasons.append(f"storage lost: {self._failure.reason}")
        elif self._storage.down:
            since = self._clock() - (self._storage.since or self._clock())
            reasons.append(f"storage unavailable: {self._storage.cause} (for {since:.0f} s)")
        if self._stream_outage.down:
            reasons.append(f"events stream unavailable: {self._stream_outage.cause}")
        if embedding != "ok" and backlog is not None:
            reasons.append(f"embedding model {embedding}: {backlog.error or 'loading'}; answers use SQLite and "
                           "FTS5 only")
        age = None
        if backlog is not None and backlog.oldest_received_at is not None and backlog.pending:
            age = max(self._clock() - backlog.oldest_received_at, 0.0)
        status: HealthStatus = ("not_ready" if storage != "ok" or self._stream_outage.down or self._phase != "serving"
                                else "degraded" if embedding != "ok" else "ok")
        return Health(
            status=status, storage=storage, embedding=embedding, backlog=backlog.pending if backlog else 0,
            backlog_age_s=age, ingest_queue=self._ingestor.queued if self._ingestor else 0, reasons=tuple(reasons),
        )

    def status(self) -> DaemonStatus:
        """A snapshot without I/O (see :mod:`memory_agent.status`): safe to call from a health check or a
        scrape however busy the daemon is."""
        agent, index, backlog = self._agent, self._index, self._backlog
        health = self.health()
        embedder: EmbedderState = {"ok": "ready", "loading": "loading"}.get(health.embedding, "degraded")  # type: ignore[assignment]
        return DaemonStatus(
            phase=self._phase,
            handle=self.config.handle,
            nats_connected=agent is not None and agent.is_connected,
            handle_registered=agent is not None and agent.is_registered,
            store_open=self._store is not None,
            index_loaded=index is not None,
            embedder=embedder,
            model=self.model_name,
            events=self._events,
            index_vectors=len(index) if index is not None else 0,
            index_kind=index.kind if index is not None else "",
            embedding_backlog=backlog.pending if backlog is not None else 0,
            embedding_backlog_age_s=health.backlog_age_s,
            in_flight=agent.in_flight if agent is not None else 0,
            uptime_s=round(self._clock() - self.started_at, 3) if self._phase == "serving" else 0.0,
            storage=health.storage,
            storage_detail=next((r for r in health.reasons if r.startswith("storage")), ""),
        )

    def _inbox_counts(self) -> InboxCounts | None:
        return self._inbox.counts() if self._inbox is not None else None

    async def stats(self) -> dict[str, Any]:
        """Event count, index size and type, model, uptime (seconds), health (see :meth:`health`), ingest,
        embedding backlog and storage figures, and the retention (days, None = keep forever) and
        sender-authentication settings."""
        assert self._store is not None and self._backlog is not None
        s = await self._store.stats()
        await self._backlog.resync()
        ingestor = self._ingestor
        batcher = self._batcher
        return {
            "version": __version__,
            "handle": self.config.handle,
            "nats_url": self.nats_url,
            "events": s.count,
            "db_bytes": s.db_bytes,
            "wal_bytes": s.wal_bytes,
            "index": {"size": len(self._index) if self._index else 0, "type": self._index.kind if self._index else None,
                      "path": str(self.config.index_path)},
            "model": self.model_name,
            "uptime_s": round(self._clock() - self.started_at, 3),
            "health": self.health().to_json(),
            "ingest": {
                "stored": ingestor.stored if ingestor else 0,
                "duplicates": ingestor.duplicates if ingestor else 0,
                "batches": ingestor.batches if ingestor else 0,
                "refused": ingestor.refused if ingestor else 0,
                "queued": ingestor.queued if ingestor else 0,
                "queue_capacity": ingestor.capacity if ingestor else 0,
            },
            "embedding": self._backlog.to_json(),
            "storage": self._storage.to_json(),
            "embedder": {"batches": batcher.batches if batcher else 0, "texts": batcher.texts if batcher else 0,
                         "clipped": batcher.clipped if batcher else 0, "queued": batcher.pending if batcher else 0,
                         "gave_way_s": round(batcher.yielded_s, 3) if batcher else 0.0},
            "llm": self.config.llm.model if self.config.llm.enabled else None,
            "retention_days": self.config.retention_days or None,
            "authenticated_senders": self.config.security.authenticated_senders,
            "cluster": None if self._applier is None or self._stream_acceptor is None else {
                **self._applier.to_json(), "replica_id": self._replica_id or None,
                "published": self._stream_acceptor.published,
                "duplicates": self._stream_acceptor.duplicates, "stream_outage": self._stream_outage.to_json(),
                "vectors": self._vector_feed.to_json() if self._vector_feed is not None else None},
            "shared": None if self._shared is None or self._vectors is None else {
                "writes": self._shared.writes, "expiries": self._shared.expiries, **self._vectors.stats()},
        }
