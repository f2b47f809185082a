"""The @memory daemon's lifecycle: start, serve, drain, close.

It registers the handle ``memory`` (configurable) on the mesh and answers every session opened to it
with what :class:`memory_agent.handlers.Handlers` replies: reports are stored (:mod:`memory_agent.ingest`:
acknowledged once committed) and embedded behind (:mod:`memory_agent.backlog`), questions answered
(:mod:`memory_agent.query.answer`), operations (``{"op": "stats"}``, shared memory) served. A message is
acknowledged on the mesh only after its reply was sent, so a crash means redelivery, and redelivery of a
stored report answers with its first id.

The daemon starts and serves without its embedding model (degraded, :meth:`MemoryDaemon.health`), and
stops, exiting non-zero, if its database file disappears (nothing more is acknowledged).

Beside the mesh it serves HTTP (``[http] listen``, :mod:`memory_agent.web.server`): Prometheus metrics,
liveness and readiness read from :meth:`MemoryDaemon.status` (no I/O), and the read-only timeline page.
The listener starts first, so ``/healthz`` answers while the model loads and ``/readyz`` says what is
not ready yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections.abc import Callable
from typing import IO

from memory_agent import __version__
from memory_agent.backlog import DenseParts, EmbeddingBacklog
from memory_agent.cluster import (
    Applier,
    StreamAcceptor,
    VectorFeed,
)
from memory_agent.cluster.replica import ReplicaMethods, explain_taken, replica_id
from memory_agent.config import Config
from memory_agent.daemon_status import StatusMethods
from memory_agent.embedding.base import DEFAULT_MODEL_NAME, load_embedder
from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.errors import ConfigError, StorageLost
from memory_agent.handlers import Handlers
from memory_agent.health import Outage
from memory_agent.inbox import InboxWatcher
from memory_agent.index.async_index import AsyncIndex
from memory_agent.index.repair import open_index
from memory_agent.ingest import Committed, Ingestor
from memory_agent.metrics import MeteredSummarizer, Metrics
from memory_agent.protocols import Acceptor, Clock, Embedder, Forgetter, Summarizer
from memory_agent.query.answer import Answerer
from memory_agent.query.retrieval import HybridRetriever
from memory_agent.query.summarizer import OpenAISummarizer
from memory_agent.query.vocabulary import VocabularyIndex
from memory_agent.retention import Eraser, sweep_forever
from memory_agent.shared.ops import SharedOps
from memory_agent.shared.service import SharedState
from memory_agent.shared.startup import open_shared
from memory_agent.shared.vectors import VectorMemory
from memory_agent.status import Phase
from memory_agent.store.events import EventStore
from memory_agent.store.faults import transient_cause
from memory_agent.tools.datadir import lock_data_dir
from memory_agent.types import Filters
from memory_agent.web.api import PageApi
from memory_agent.web.server import HttpServer, http_server
from memory_agent.wire import error_reply
from mesh import AsyncAgent, Manifest, Message, PriorityRule, RoomEvent
from mesh.access import jetstream
from mesh.constants import DEFAULT_HEARTBEAT_INTERVAL
from mesh.errors import HandleTaken, PayloadTooLarge, ServerError, SessionClosed, SessionNotFound
from mesh.server import NatsServer
from mesh.tasks import cancel_and_wait

__all__ = ["CLAIM_WAIT", "MANIFEST", "MemoryDaemon"]

log = logging.getLogger(__name__)

MANIFEST = Manifest(
    description="Remembers what agents report (JSON events) and answers questions about them in plain language.",
    commands=(),
    tags=("memory", "observability"),
    version=__version__,
    capabilities=("memory.report", "memory.ask", "memory.timeline", "memory.shared"),
    domains=("ops",),
    input_types=("application/json", "text/plain"),
    output_types=("application/json", "text/plain"),
    priority=PriorityRule(text=True, json_keys=("query", "op")),  # questions and operations: the priority lane
)


#: Seconds start() keeps trying to claim a handle held by another agent: a crashed predecessor's claim
#: lasts 3 heartbeat intervals after its last heartbeat (see mesh.registry), plus a margin.
CLAIM_WAIT = 3 * DEFAULT_HEARTBEAT_INTERVAL + 5.0


async def _stop(task: asyncio.Task[None] | None) -> None:
    """Stop a background task of the daemon for sure (cancelled again until it ends: a cancellation lost in
    nats-py's ``wait_for`` on Python 3.11, see :mod:`mesh.tasks`); a failure it had ended with is logged, so
    the rest of ``close()`` still runs."""
    failed = await cancel_and_wait(task)
    if failed is not None and task is not None:
        log.error("background task %s had failed", task.get_name(), exc_info=failed)


class MemoryDaemon(ReplicaMethods, StatusMethods):
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
        self._applier: Applier | None = None
        self._replica_id = ""
        self._stream_acceptor: StreamAcceptor | None = None
        self._vector_feed: VectorFeed | None = None
        self._stream_outage = Outage(
            "events stream", logger=log, clock=clock,
            impact="reports stay unacknowledged and are tried again until the stream takes them; questions are "
                   "answered from what this replica has applied")
        self._backlog: EmbeddingBacklog | None = None
        self._retriever: HybridRetriever | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._vector_lock = asyncio.Lock()
        self._storage = Outage(
            "storage", logger=log, clock=clock,
            impact="reports stay unacknowledged and are tried again until it is back (none is refused); "
                   "questions are answered from what is stored")
        self._failure: StorageLost | None = None
        self._answerer: Answerer | None = None
        self._summarizer: OpenAISummarizer | None = None
        self._agent: AsyncAgent | None = None
        self._saver: asyncio.Task[None] | None = None
        self._eraser: Eraser | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: Handlers | None = None
        self._shared: SharedState | None = None
        self._vectors: VectorMemory | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._dirty = False
        self._stopping = asyncio.Event()
        self._phase: Phase = "stopped"
        self._events = 0
        self._inbox: InboxWatcher | None = None
        self._http: HttpServer | None = None
        self.metrics = Metrics(self.status, inbox=self._inbox_counts)
        self.nats_url = config.nats_url
        self.model_name = ""
        self.started_at = 0.0
        self.index_report = ""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, load the model and the index, join the mesh. Raises MemoryAgentError subclasses."""
        cfg = self.config
        self._phase = "starting"
        self._lock = lock_data_dir(cfg.data_dir)
        try:
            await self._start(cfg)
        except BaseException:
            await self.close()
            raise

    async def _start(self, cfg: Config) -> None:
        auth = cfg.nats.auth()  # ConfigError when a named secret is missing
        self._http = http_server(cfg.http, status=self.status, metrics=self.metrics,
                                 page=PageApi(self, clock=self._clock))  # ConfigError: a token is missing
        if self._http is not None:
            await self._http.start()  # ConfigError when the port is taken
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
            try:
                await asyncio.to_thread(self._server.start)
            except ServerError as exc:
                raise _embedded_server_error(exc, cfg.embedded_nats_host, cfg.embedded_nats_port) from None
            self.nats_url = self._server.url
            log.info("embedded nats-server with JetStream at %s (store %s)", self.nats_url, cfg.data_dir / "nats")
        self._store = await EventStore.open(cfg.db_path, fts_max_docs=cfg.index.fts_max_docs, filter_columns=True)
        self._events = await self._store.count(None, Filters())
        self.model_name = self._embedder_override.name if self._embedder_override else (
            cfg.embedding.model or DEFAULT_MODEL_NAME)
        if cfg.cluster.enabled and cfg.cluster.share_vectors:
            self._vector_feed = self._make_vector_feed(cfg)
        self._backlog = EmbeddingBacklog(
            self._store, open_dense=self._open_dense, on_ready=self._dense_ready, storage=self._storage,
            vector_lock=self._vector_lock, model=self.model_name, batch=cfg.embedding.backlog_batch,
            retry_interval=cfg.embedding.retry_interval, retry_cap=cfg.ingest.retry_max_delay,
            on_embedded=self._on_embedded, clock=self._clock, source=self._vector_feed,
        )
        r = cfg.retrieval
        self._retriever = HybridRetriever(
            self._store, None, None, rrf_k=r.rrf_k, candidates=r.candidates,
            fusion=r.fusion, dense_weight=r.dense_weight, coverage_power=r.coverage_power,
            context_window=r.context_window, context_weight=r.context_weight, min_score=r.min_score,
        )
        self._eraser = Eraser(self._store, None, batch=cfg.retention_batch, on_removed=self._on_removed,
                              vector_lock=self._vector_lock)
        await self._backlog.load()  # degraded (logged) when the model cannot load; a model mismatch raises
        summarizer: Summarizer | None = None
        if cfg.llm.enabled:
            self._summarizer = OpenAISummarizer(
                base_url=cfg.llm.base_url, model=cfg.llm.model, api_key_env=cfg.llm.api_key_env, timeout=cfg.llm.timeout
            )
            summarizer = MeteredSummarizer(self._summarizer, self.metrics)
            log.info("LLM summarizer: %s at %s", cfg.llm.model, cfg.llm.base_url)
        started = time.perf_counter()
        vocabulary = await asyncio.to_thread(VocabularyIndex.build, await self._store.vocabulary())
        log.info("vocabulary of %d names indexed in %.1f s", len(vocabulary), time.perf_counter() - started)
        self._answerer = Answerer(
            self._store,
            self._retriever,
            tz=cfg.tz,
            vocabulary=vocabulary,
            default_limit=r.default_limit,
            text_limit=r.text_limit,
            max_list=r.max_list,
            max_clock_skew=cfg.max_clock_skew,
            summarizer=summarizer,
            summarizer_events=cfg.llm.max_events,
            clock=self._clock,
        )
        if not cfg.cluster.enabled:
            self._ingestor = Ingestor(
                self._store, outage=self._storage, queue=cfg.ingest.queue, batch=cfg.ingest.batch,
                on_committed=self._on_committed, on_lost=self._lose_storage,
            )
            self._ingestor.start()
        await self._backlog.start()
        self._saver = asyncio.create_task(self._save_periodically(), name="memory-index-saver")
        self._watchdog = asyncio.create_task(self._watch_storage(), name="memory-storage-watch")
        if cfg.retention_days > 0:
            self._sweeper = asyncio.create_task(
                sweep_forever(self._eraser, days=cfg.retention_days, interval=cfg.retention_interval,
                              future_skew=cfg.max_clock_skew, clock=self._clock), name="memory-retention")
        # A handler exception (the store lost, ingest closing) leaves the message for redelivery.
        servers = [url.strip() for url in self.nats_url.split(",") if url.strip()]  # nats_url: comma-separated
        # In a cluster the mesh's own streams and buckets get the events stream's replica count; a single
        # node keeps the mesh's default ($MESH_REPLICAS, else 1).
        # With a replica key, every replica registers cfg.handle as a member of one replica group (docs/scaling.md).
        key = cfg.cluster.replica_key.get_secret_value() if cfg.cluster.enabled else ""
        self._replica_id = replica_id(cfg) if key else ""
        self._agent = AsyncAgent(cfg.handle, servers=servers, manifest=MANIFEST, max_in_flight=cfg.max_in_flight,
                                 retry_on_error=True, drain_timeout=cfg.drain_timeout, auth=auth,
                                 replicas=cfg.cluster.stream_replicas if cfg.cluster.enabled else None,
                                 replica_key=key or None, replica_id=self._replica_id or None)
        self._agent.on_message(self._on_message)
        await self._agent.start()
        acceptor: Acceptor | None = self._ingestor
        forgetter: Forgetter = self._eraser
        if cfg.cluster.enabled:
            if self._replica_id:
                await self._wait_replica_id_free(self._agent, CLAIM_WAIT)
            acceptor, forgetter = await self._start_cluster(cfg, self._agent, self._store, self._eraser)
        assert acceptor is not None
        self._handlers = Handlers(
            cfg, acceptor=acceptor, answerer=self._answerer, eraser=forgetter, stats=self.stats,
            on_forgotten=self._forgotten, clock=self._clock, observe=self.metrics.observe,
            shared=await self._start_shared(cfg, self._agent, self._store) if cfg.shared.enabled else None,
            replica=self._applier,
        )
        await self._claim_handle(self._agent)
        self._inbox = InboxWatcher(self.nats_url, handle=cfg.handle, auth=auth)
        self._inbox.start()
        self.started_at = self._clock()
        self._phase = "serving"
        log.info("@%s serving on %s: %d events; %s", cfg.handle, self.nats_url, self._events,
                 self.index_report or f"degraded, without the embedding model ({self._backlog.error})")

    async def _start_shared(self, cfg: Config, agent: AsyncAgent, store: EventStore) -> SharedOps:
        """Open shared memory (:func:`memory_agent.shared.startup.open_shared`) and watch its expiries."""
        js = jetstream(agent)
        parts = await open_shared(cfg, js, store, clock=self._clock)
        self._shared, self._vectors = parts.state, parts.vectors
        self._expiry = asyncio.create_task(parts.state.watch_expiries(js), name="memory-shared-expiry")
        return parts.ops

    async def _open_dense(self) -> DenseParts:
        """Load the model (or take the one given) and open its FAISS index (repaired from SQLite if needed).

        Raises ``ConfigError`` when the model cannot load, ``VectorModelMismatch`` when SQLite holds vectors
        of another model.
        """
        cfg = self.config
        assert self._store is not None
        embedder = self._embedder_override
        if embedder is None:
            started = time.perf_counter()
            embedder = await asyncio.to_thread(load_embedder, cfg.embedding, data_dir=cfg.data_dir)
            log.info("model %s (%d dims, %s backend) loaded in %.1f s", embedder.name, embedder.dim,
                     cfg.embedding.backend, time.perf_counter() - started)
        index, report = await open_index(
            cfg.index_path, self._store, dim=embedder.dim, model=embedder.name, config=cfg.index
        )
        log.info("%s", report)
        return DenseParts(
            BatchingEmbedder(embedder, max_batch=cfg.embedding.max_batch,
                             max_batch_chars=cfg.embedding.max_batch_chars, max_chars=cfg.embedding.max_chars,
                             yield_to=self._messages_in_flight),
            AsyncIndex(index, vectors=self._store, exact_candidates=cfg.index.exact_candidates,
                       rerank=cfg.index.rerank),
            report,
        )

    def _messages_in_flight(self) -> int:
        """Reports being acknowledged and questions being answered: the embedding backlog gives way to them."""
        return self._agent.in_flight if self._agent is not None else 0

    def _dense_ready(self, parts: DenseParts) -> None:
        """The model loaded: questions get the dense side, deletes reach FAISS, saves begin."""
        self._batcher, self._index, self.index_report = parts.embedder, parts.index, parts.report
        self.model_name = parts.embedder.name
        assert self._retriever is not None and self._eraser is not None
        self._retriever.attach(parts.index, parts.embedder)
        self._eraser.index = parts.index

    async def _claim_handle(self, agent: AsyncAgent) -> None:
        """Register the handle. After a crash the old process still holds it until its heartbeat expires
        (3 heartbeat intervals), so HandleTaken is retried for that long; a live holder still wins."""
        deadline = time.monotonic() + CLAIM_WAIT
        for attempt in itertools.count():
            try:
                await agent.register()
                return
            except HandleTaken as exc:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    raise explain_taken(exc, self.config) from None
                if attempt == 0:
                    log.warning("@%s is held by another live agent (a crashed predecessor holds it until its "
                                "heartbeat expires); retrying for up to %.0f s", agent.handle, CLAIM_WAIT)
                await asyncio.sleep(1.0)

    @property
    def replica_id(self) -> str:
        """This replica's id in its handle's replica group ("" unless ``[cluster] replica_key`` is set)."""
        return self._replica_id

    async def serve(self) -> None:
        """Handle messages until :meth:`stop` is called, a signal arrives or the store is lost."""
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
        """Drain in-flight handlers, flush ingest, stop the backlog, save the index (unless the store is
        lost: nothing is written into a data directory that is gone), close everything. Idempotent.

        The HTTP listener closes last, so ``/readyz`` says ``stopping`` while the daemon drains.
        """
        if self._phase != "stopped":
            self._phase = "stopping"
        expiry, self._expiry = self._expiry, None
        await _stop(expiry)
        if self._inbox is not None:
            await self._inbox.close()
            self._inbox = None
        if self._applier is not None:  # a cluster replica stops applying first: nothing more to commit
            await self._applier.close()
            self._applier = None
        if self._vector_feed is not None:
            await self._vector_feed.close()
        if self._agent is not None:
            agent, self._agent = self._agent, None
            with contextlib.suppress(Exception):
                await agent.close()  # drains: handlers finish, or their messages stay unacked
        if self._vectors is not None:
            await self._vectors.close()
            self._vectors = None
        if self._ingestor is not None:
            await self._ingestor.close()
            self._ingestor = None
        if self._backlog is not None:
            await self._backlog.close()
            self._backlog = None
        tasks = (self._watchdog, self._sweeper, self._saver)
        self._watchdog = self._sweeper = self._saver = None
        for task in tasks:
            await _stop(task)
        if self._index is not None:
            if self._failure is None:
                try:
                    await self._index.save(self.config.index_path)
                except Exception:  # repaired from SQLite at the next start
                    log.exception("saving the FAISS index at shutdown failed")
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
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._phase = "stopped"

    async def async_run(self, on_started: Callable[[MemoryDaemon], None] | None = None) -> None:
        """start, serve until SIGINT/SIGTERM, close; ``on_started`` is called once serving.

        Raises ``StorageLost`` (after closing) when the database file disappeared while serving.
        """
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
        if self._failure is not None:
            raise self._failure

    def run(self) -> None:
        asyncio.run(self.async_run())

    # --- messages ----------------------------------------------------------------------------

    @property
    def handlers(self) -> Handlers:
        """What answers each message (after start()): ``await daemon.handlers.handle(msg)`` gives the reply."""
        assert self._handlers is not None, "start() first"
        return self._handlers

    async def wait_embedded(self, timeout: float | None = None) -> None:
        """Wait until every stored event has a vector (or was found impossible to embed): for tests,
        benchmarks and tools. Raises ``TimeoutError`` after ``timeout`` seconds (say, while degraded)."""
        assert self._backlog is not None, "start() first"
        async with asyncio.timeout(timeout):
            await self._backlog.wait_idle()

    @property
    def store(self) -> EventStore:
        """The open event store (after start())."""
        assert self._store is not None, "start() first"
        return self._store

    @property
    def answerer(self) -> Answerer:
        """What answers questions (after start())."""
        assert self._answerer is not None, "start() first"
        return self._answerer

    @property
    def http_url(self) -> str | None:
        """``http://host:port`` of the HTTP listener (the port chosen when ``listen`` asked for 0), or None."""
        return self._http.url if self._http is not None else None

    async def _on_message(self, msg: Message | RoomEvent) -> None:
        """Answer one mesh message to @memory by resolving its session with the handlers' reply (a room
        event is stored and needs none).

        Routes by payload only, whatever subject (or priority lane) the message came on. Raises (so the
        message is not acknowledged) only when the store is lost or ingest is closing.
        """
        assert self._handlers is not None, "start() first"
        reply = await self._handlers.handle(msg)
        if reply is not None and isinstance(msg, Message):
            await self._reply(msg, reply.payload, content_type=reply.content_type)

    async def _forgotten(self, count: int) -> None:
        if self._index is not None:
            await self._index.save(self.config.index_path)  # the vectors leave the file on disk now

    async def _reply(self, msg: Message, payload: str, *, content_type: str = "application/json") -> None:
        assert self._agent is not None
        try:
            await self._agent.resolve(msg.session, payload, content_type=content_type)
        except SessionClosed:
            # Resolved by someone else (the mesh itself re-publishes our own recorded resolve when a
            # message we answered is handled again, so a redelivered report's sender still gets it).
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

    def _on_removed(self, count: int) -> None:
        self._dirty = True
        self._events -= count

    def _on_committed(self, committed: Committed) -> None:
        self._events += len(committed.ids)
        self.metrics.observe_batch(len(committed.ids))
        if self._answerer is not None:
            self._answerer.observe(committed.events)
        if self._vector_feed is not None:  # before the backlog hears of them: they may wait for their vectors
            self._vector_feed.applied(committed.ids)
        if self._backlog is not None:
            self._backlog.added(len(committed.ids), committed.events[0].received_at)

    def _on_embedded(self, count: int) -> None:
        self._dirty = True

    def _lose_storage(self, lost: StorageLost) -> None:
        """The database file is gone: stop (nothing more is acknowledged); async_run raises ``lost``."""
        if self._failure is None:
            self._failure = lost
            self.stop()

    async def _watch_storage(self) -> None:
        """Every ``ingest.watch_interval`` s, check that the database file is still the one opened."""
        assert self._store is not None
        while True:
            await asyncio.sleep(self.config.ingest.watch_interval)
            try:
                self._store.check_on_disk()
            except StorageLost as lost:
                if self._ingestor is not None:
                    self._ingestor.lose(lost)
                else:  # a cluster replica: stop applying and acknowledging
                    self._lose_storage(lost)
                return

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.index_save_interval)
            if self._vectors is not None:
                try:
                    await self._vectors.save()
                except Exception:
                    log.exception("saving vector memory's FAISS files failed; will retry")
            if self._dirty and self._index is not None and self._failure is None:
                self._dirty = False
                try:
                    await self._index.save(self.config.index_path)
                except Exception as exc:
                    self._dirty = True
                    cause = transient_cause(exc)
                    if cause is None:
                        log.exception("saving the FAISS index failed; will retry")
                    else:  # a full disk: the file stays behind SQLite, which a restart repairs
                        log.warning("saving the FAISS index failed (%s); will retry", cause)


def _embedded_server_error(exc: ServerError, host: str, port: int) -> ConfigError:
    """One line for a nats-server that would not start: a taken port names the flag, anything else quotes
    the server's last error line (its whole log is in data_dir/nats/nats-server.log)."""
    tail = exc.log_tail or ""
    if "address already in use" in tail.lower():
        return ConfigError(
            f"port {port} of the embedded nats-server is in use ({host}:{port}): stop what uses it, pick another "
            "with --port PORT (0 = any free port), or join a running NATS with --nats-url", key="embedded_nats_port")
    errors = [line for line in tail.splitlines() if "[FTL]" in line or "[ERR]" in line]
    last = (errors or tail.splitlines() or [str(exc).splitlines()[0]])[-1].strip()
    return ConfigError(f"the embedded nats-server did not start: {last}")
