"""The @memory daemon's lifecycle: start, serve, drain, close.

It registers the handle ``memory`` (configurable) on the mesh and answers every session opened to it
with what :class:`memory_agent.handlers.Handlers` replies: reports are stored
(:mod:`memory_agent.ingest`), questions answered (:mod:`memory_agent.query.answer`), operations
(``{"op": "stats"}``) served. A message is acknowledged on the mesh only after its reply was sent, so a
crash means redelivery, and redelivery of a stored report answers with its first id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import Callable
from typing import IO, Any

from memory_agent import __version__
from memory_agent.config import Config
from memory_agent.embedding.base import load_embedder
from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.errors import ConfigError
from memory_agent.handlers import Handlers
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.repair import open_index
from memory_agent.ingest import Ingestor
from memory_agent.protocols import Clock, Embedder
from memory_agent.query.answer import Answerer
from memory_agent.query.retrieval import HybridRetriever
from memory_agent.query.summarizer import OpenAISummarizer
from memory_agent.query.vocabulary import VocabularyIndex
from memory_agent.retention import Eraser, sweep_forever
from memory_agent.store.events import EventStore
from memory_agent.tools.datadir import lock_data_dir
from memory_agent.wire import error_reply
from mesh import AsyncAgent, Manifest, Message
from mesh.constants import DEFAULT_HEARTBEAT_INTERVAL
from mesh.errors import HandleTaken, PayloadTooLarge, ServerError, SessionClosed, SessionNotFound
from mesh.server import NatsServer

__all__ = ["CLAIM_WAIT", "MANIFEST", "MemoryDaemon"]

log = logging.getLogger(__name__)

MANIFEST = Manifest(
    description="Remembers what agents report (JSON events) and answers questions about them in plain language.",
    commands=(),
    tags=("memory", "observability"),
    version=__version__,
    capabilities=("memory.report", "memory.ask", "memory.timeline"),
    domains=("ops",),
    input_types=("application/json", "text/plain"),
    output_types=("application/json", "text/plain"),
)


#: Seconds start() keeps trying to claim a handle held by another agent: a crashed predecessor's claim
#: lasts 3 heartbeat intervals after its last heartbeat (see mesh.registry), plus a margin.
CLAIM_WAIT = 3 * DEFAULT_HEARTBEAT_INTERVAL + 5.0


class MemoryDaemon:
    """The long-running agent. ``run()`` for production, ``async_run()``/``start()``+``close()`` for tests.

    ``embedder`` replaces the configured sentence-transformers model (tests pass a small one);
    ``clock`` gives seconds since the epoch, UTC (tests fix "now").
    """

    def __init__(
        self, config: Config, *, embedder: Embedder | None = None, clock: Clock = time.time
    ) -> None:
        self.config = config
        self._embedder_override = embedder
        self._clock = clock
        self._lock: IO[str] | None = None
        self._server: NatsServer | None = None
        self._store: EventStore | None = None
        self._index: AsyncIndex | None = None
        self._batcher: BatchingEmbedder | None = None
        self._ingestor: Ingestor | None = None
        self._answerer: Answerer | None = None
        self._summarizer: OpenAISummarizer | None = None
        self._agent: AsyncAgent | None = None
        self._saver: asyncio.Task[None] | None = None
        self._eraser: Eraser | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: Handlers | None = None
        self._dirty = False
        self._stopping = asyncio.Event()
        self.nats_url = config.nats_url
        self.model_name = ""
        self.started_at = 0.0
        self.index_report = ""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, load the model and the index, join the mesh. Raises MemoryAgentError subclasses."""
        cfg = self.config
        self._lock = lock_data_dir(cfg.data_dir)
        try:
            await self._start(cfg)
        except BaseException:
            await self.close()
            raise

    async def _start(self, cfg: Config) -> None:
        auth = cfg.nats.auth()  # ConfigError when a named secret is missing
        if cfg.security.admins and not cfg.security.authenticated_senders:
            log.warning("security.admins is checked against the handle a message claims: without "
                        "security.authenticated_senders (and a nats-server that enforces it) any agent can "
                        "claim an admin's handle")
        if not self.nats_url:
            try:
                self._server = NatsServer(
                    store_dir=cfg.data_dir / "nats", host=cfg.embedded_nats_host, port=cfg.embedded_nats_port,
                    auth=auth,
                )
            except ServerError as exc:
                raise ConfigError(f"[nats]: {exc}") from None
            await asyncio.to_thread(self._server.start)
            self.nats_url = self._server.url
            log.info("embedded nats-server with JetStream at %s (store %s)", self.nats_url, cfg.data_dir / "nats")
        embedder = self._embedder_override
        if embedder is None:
            started = time.perf_counter()
            embedder = await asyncio.to_thread(load_embedder, cfg.embedding, data_dir=cfg.data_dir)
            log.info("model %s (%d dims, %s backend) loaded in %.1f s", embedder.name, embedder.dim,
                     cfg.embedding.backend, time.perf_counter() - started)
        self.model_name = embedder.name
        self._store = await EventStore.open(cfg.db_path, fts_max_docs=cfg.index.fts_max_docs, filter_columns=True)
        index, self.index_report = await open_index(
            cfg.index_path, self._store, dim=embedder.dim, model=embedder.name, config=cfg.index
        )
        log.info("%s", self.index_report)
        self._index = AsyncIndex(
            index, vectors=self._store, exact_candidates=cfg.index.exact_candidates, rerank=cfg.index.rerank
        )
        self._batcher = BatchingEmbedder(embedder, max_batch=cfg.embedding.max_batch)
        if cfg.llm.enabled:
            self._summarizer = OpenAISummarizer(
                base_url=cfg.llm.base_url, model=cfg.llm.model, api_key_env=cfg.llm.api_key_env, timeout=cfg.llm.timeout
            )
            log.info("LLM summarizer: %s at %s", cfg.llm.model, cfg.llm.base_url)
        r = cfg.retrieval
        retriever = HybridRetriever(
            self._store, self._index, self._batcher, rrf_k=r.rrf_k, candidates=r.candidates,
            fusion=r.fusion, dense_weight=r.dense_weight, coverage_power=r.coverage_power,
            context_window=r.context_window, context_weight=r.context_weight, min_score=r.min_score,
        )
        started = time.perf_counter()
        vocabulary = await asyncio.to_thread(VocabularyIndex.build, await self._store.vocabulary())
        log.info("vocabulary of %d names indexed in %.1f s", len(vocabulary), time.perf_counter() - started)
        self._answerer = Answerer(
            self._store,
            retriever,
            tz=cfg.tz,
            vocabulary=vocabulary,
            default_limit=r.default_limit,
            text_limit=r.text_limit,
            max_list=r.max_list,
            max_clock_skew=cfg.max_clock_skew,
            summarizer=self._summarizer,
            summarizer_events=cfg.llm.max_events,
            clock=self._clock,
        )
        self._ingestor = Ingestor(
            self._store, self._index, self._batcher, model=embedder.name,
            max_batch=cfg.embedding.max_batch, on_stored=self._on_stored,
        )
        self._ingestor.start()
        self._saver = asyncio.create_task(self._save_periodically(), name="memory-index-saver")
        self._eraser = Eraser(self._store, self._index, batch=cfg.retention_batch, on_removed=self._on_removed)
        if cfg.retention_days > 0:
            self._sweeper = asyncio.create_task(
                sweep_forever(self._eraser, days=cfg.retention_days, interval=cfg.retention_interval,
                              future_skew=cfg.max_clock_skew, clock=self._clock), name="memory-retention")
        self._handlers = Handlers(
            cfg, ingestor=self._ingestor, answerer=self._answerer, eraser=self._eraser, stats=self.stats,
            on_forgotten=self._forgotten, clock=self._clock,
        )
        self._agent = AsyncAgent(cfg.handle, servers=self.nats_url, manifest=MANIFEST, max_in_flight=cfg.max_in_flight,
                                 auth=auth)
        self._agent.on_message(self._on_message)
        await self._agent.start()
        await self._claim_handle(self._agent)
        self.started_at = self._clock()
        log.info("@%s serving on %s: %s", cfg.handle, self.nats_url, self.index_report)

    async def _claim_handle(self, agent: AsyncAgent) -> None:
        """Register the handle. After a crash the old process still holds it until its heartbeat expires
        (3 heartbeat intervals), so HandleTaken is retried for that long; a live holder still wins."""
        deadline = time.monotonic() + CLAIM_WAIT
        for attempt in itertools.count():
            try:
                await agent.register()
                return
            except HandleTaken:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    raise
                if attempt == 0:
                    log.warning("@%s is held by another live agent (a crashed predecessor holds it until its "
                                "heartbeat expires); retrying for up to %.0f s", agent.handle, CLAIM_WAIT)
                await asyncio.sleep(1.0)

    async def serve(self) -> None:
        """Handle messages until :meth:`stop` is called or a signal arrives."""
        assert self._agent is not None, "start() first"
        runner = asyncio.create_task(self._agent.run_forever(), name="memory-agent-loop")
        stopper = asyncio.create_task(self._stopping.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if runner in done:
            runner.result()  # surface a crash of the loop
        else:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def stop(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler)."""
        self._stopping.set()

    async def close(self) -> None:
        """Drain in-flight handlers, flush ingest, save the index, close everything. Idempotent."""
        if self._agent is not None:
            agent, self._agent = self._agent, None
            with contextlib.suppress(Exception):
                await agent.close()  # drains: handlers finish, or their messages stay unacked
        if self._ingestor is not None:
            await self._ingestor.close()
            self._ingestor = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        if self._index is not None:
            await self._index.save(self.config.index_path)
            await self._index.close()
            self._index = None
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        if self._summarizer is not None:
            await self._summarizer.close()
            self._summarizer = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
            self._server = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def async_run(self, on_started: Callable[[MemoryDaemon], None] | None = None) -> None:
        """start, serve until SIGINT/SIGTERM, close; ``on_started`` is called once serving."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.start()
        if on_started is not None:
            on_started(self)
        try:
            await self.serve()
        finally:
            log.info("shutting down: draining in-flight work")
            await self.close()
            log.info("stopped")

    def run(self) -> None:
        asyncio.run(self.async_run())

    # --- messages ----------------------------------------------------------------------------

    @property
    def handlers(self) -> Handlers:
        """What answers each message (after start()): ``await daemon.handlers.handle(msg)`` gives the reply."""
        assert self._handlers is not None, "start() first"
        return self._handlers

    @property
    def store(self) -> EventStore:
        """The open event store (after start())."""
        assert self._store is not None, "start() first"
        return self._store

    async def _on_message(self, msg: Message) -> None:
        """Answer one mesh message to @memory by resolving its session with the handlers' reply.

        Raises (so the message is redelivered) only when a report could not be stored.
        """
        assert self._handlers is not None, "start() first"
        reply = await self._handlers.handle(msg)
        if reply is not None:
            await self._reply(msg, reply.payload, content_type=reply.content_type)

    async def _forgotten(self, count: int) -> None:
        assert self._index is not None
        await self._index.save(self.config.index_path)  # the vectors leave the file on disk now

    async def _reply(self, msg: Message, payload: str, *, content_type: str = "application/json") -> None:
        assert self._agent is not None
        try:
            await self._agent.resolve(msg.session, payload, content_type=content_type)
        except SessionClosed:
            # A redelivered message whose session we already resolved: the answer went out before.
            log.debug("session %s already resolved; not answering again", msg.session)
        except SessionNotFound:
            # Expired, or never opened (a message published without the SDK): nobody can get the answer.
            log.info("session %s of %s from @%s does not exist; reply dropped", msg.session, msg.message_id,
                     msg.from_handle)
        except PayloadTooLarge as exc:
            # An answer listing very large reports: say so, rather than fail and be redelivered.
            log.warning("reply to %s from @%s is %d bytes, over the limit of %d; answering with an error",
                        msg.message_id, msg.from_handle, exc.size, exc.limit)
            await self._reply(msg, error_reply(
                f"the answer is {exc.size} bytes, over the mesh's limit of {exc.limit}: ask for fewer events "
                '(a smaller "limit") or narrow the question with filters or a time window'))

    # --- stats and index ----------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Event count, index size and type, model, uptime (seconds), ingest counters, and the retention
        (days, None = keep forever) and sender-authentication settings."""
        assert self._store is not None and self._index is not None and self._batcher is not None
        s = await self._store.stats()
        return {
            "version": __version__,
            "handle": self.config.handle,
            "nats_url": self.nats_url,
            "events": s.count,
            "db_bytes": s.db_bytes,
            "index": {"size": len(self._index), "type": self._index.kind, "path": str(self.config.index_path)},
            "model": self.model_name,
            "uptime_s": round(self._clock() - self.started_at, 3),
            "ingest": {
                "stored": self._ingestor.stored if self._ingestor else 0,
                "duplicates": self._ingestor.duplicates if self._ingestor else 0,
                "batches": self._ingestor.batches if self._ingestor else 0,
            },
            "embedder": {"batches": self._batcher.batches, "texts": self._batcher.texts},
            "llm": self.config.llm.model if self.config.llm.enabled else None,
            "retention_days": self.config.retention_days or None,
            "authenticated_senders": self.config.security.authenticated_senders,
        }

    def _on_removed(self, count: int) -> None:
        self._dirty = True

    def _on_stored(self, events: Any) -> None:
        self._dirty = True
        if self._answerer is not None:
            self._answerer.observe(events)

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.index_save_interval)
            if self._dirty and self._index is not None:
                self._dirty = False
                try:
                    await self._index.save(self.config.index_path)
                except Exception:
                    self._dirty = True
                    log.exception("saving the FAISS index failed; will retry")
