"""The @memory daemon: start, serve, drain, close.

It registers the handle ``memory`` (configurable) on the mesh and answers every session opened to it:
reports are stored (:mod:`memory_agent.ingest`), questions answered (:mod:`memory_agent.answer`),
operations (``{"op": "stats"}``) served. A message is acknowledged on the mesh only after its reply
was sent, so a crash means redelivery, and redelivery of a stored report answers with its first id.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from memory_agent import __version__
from memory_agent.access import AccessDenied, check_admin, parse_forget
from memory_agent.answer import Answerer
from memory_agent.config import Config
from memory_agent.embedder import BatchingEmbedder, Embedder, load_embedder
from memory_agent.errors import ConfigError, MemoryAgentError, QueryError, ReportError
from memory_agent.index import AsyncIndex, open_index
from memory_agent.ingest import Ingestor
from memory_agent.retention import Eraser, sweep_forever
from memory_agent.retrieval import HybridRetriever
from memory_agent.store import EventStore
from memory_agent.summarizer import OpenAISummarizer
from memory_agent.wire import Operation, Question, Report, build_event, classify, error_reply, stored_reply
from mesh import AsyncAgent, Manifest, Message
from mesh.constants import DEFAULT_HEARTBEAT_INTERVAL
from mesh.errors import HandleTaken, PayloadTooLarge, ServerError, SessionClosed, SessionNotFound
from mesh.server import NatsServer

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


class DataDirLocked(MemoryAgentError):
    """Another daemon (or ``memory-agent reindex``) holds the data directory."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the exclusive lock ``<data_dir>/daemon.lock`` (released when the file closes).

    Raises DataDirLocked naming the pid that holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "daemon.lock", "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirLocked(
            f"{data_dir} is in use by another memory-agent (pid {holder}): stop it, or use another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class MemoryDaemon:
    """The long-running agent. ``run()`` for production, ``async_run()``/``start()``+``close()`` for tests.

    ``embedder`` replaces the configured sentence-transformers model (tests pass a small one);
    ``clock`` gives seconds since the epoch, UTC (tests fix "now").
    """

    def __init__(
        self, config: Config, *, embedder: Embedder | None = None, clock: Callable[[], float] = time.time
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
            fusion=r.fusion, dense_weight=r.dense_weight, context_window=r.context_window,
            context_weight=r.context_weight,
        )
        self._answerer = Answerer(
            self._store,
            retriever,
            tz=cfg.tz,
            vocabulary=await self._store.vocabulary(),
            default_limit=r.default_limit,
            max_list=r.max_list,
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
                              clock=self._clock), name="memory-retention")
        self._agent = AsyncAgent(cfg.handle, servers=self.nats_url, manifest=MANIFEST, max_in_flight=cfg.max_in_flight,
                                 auth=auth)
        self._agent.on_message(self.handle)
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
    def store(self) -> EventStore:
        """The open event store (after start())."""
        assert self._store is not None, "start() first"
        return self._store

    async def handle(self, msg: Message) -> None:
        """Handle one mesh message to @memory and resolve its session with the reply.

        Raises (so the message is redelivered) only when a report could not be stored.
        """
        if msg.message_type == "session_resolve":
            return
        started = time.perf_counter()
        try:
            request = classify(msg.payload, msg.content_type, tz=self.config.tz)
        except (ReportError, QueryError) as exc:
            log.info("rejected %s from @%s: %s", msg.message_id, msg.from_handle, exc)
            await self._reply(msg, error_reply(str(exc)))
            return
        if isinstance(request, Report):
            await self._report(msg, request)
        elif isinstance(request, Question):
            await self._question(msg, request)
        else:
            await self._operation(msg, request)
        log.debug("%s from @%s handled in %.1f ms", type(request).__name__, msg.from_handle,
                  (time.perf_counter() - started) * 1000)

    async def _report(self, msg: Message, report: Report) -> None:
        assert self._ingestor is not None
        try:
            event = build_event(
                report,
                message_id=msg.message_id,
                session=msg.session,
                from_handle=msg.from_handle,
                trace_id=msg.trace_id,
                sent_at=msg.sent_at,
                received_at=self._clock(),
                tz=self.config.tz,
            )
        except ReportError as exc:
            log.info("rejected report %s from @%s: %s", msg.message_id, msg.from_handle, exc)
            await self._reply(msg, error_reply(str(exc)))
            return
        except Exception as exc:  # a payload that trips a bug: answer it rather than redeliver it forever
            log.exception("reading report %s from @%s failed", msg.message_id, msg.from_handle)
            await self._reply(msg, error_reply(f"internal error while reading the report ({type(exc).__name__})"))
            return
        if self.config.security.authenticated_senders:
            event = replace(event, sender_verified=True)
        # Storage errors propagate: the message is not acked and will be redelivered.
        result = await self._ingestor.ingest(event)
        await self._reply(msg, stored_reply(result))

    async def _question(self, msg: Message, question: Question) -> None:
        assert self._answerer is not None
        try:
            answer = await self._answerer.answer(question)
        except Exception as exc:  # a question that breaks answering must not be redelivered forever
            log.exception("answering %s from @%s failed", msg.message_id, msg.from_handle)
            await self._reply(msg, error_reply(f"internal error while answering ({type(exc).__name__}): {exc}"))
            return
        if question.structured:
            await self._reply(msg, json.dumps(answer.to_json(), ensure_ascii=False))
        else:
            await self._reply(msg, answer.text, content_type="text/plain")

    async def _operation(self, msg: Message, op: Operation) -> None:
        if op.op == "stats":
            await self._reply(msg, json.dumps(await self.stats()))
        elif op.op == "forget":
            await self._forget(msg, op)
        else:
            await self._reply(msg, error_reply(f"unknown op {op.op!r}: the operations are 'stats' and 'forget'"))

    async def _forget(self, msg: Message, op: Operation) -> None:
        """Delete events for an admin (see memory_agent.access); everyone else gets an error reply."""
        assert self._eraser is not None and self._index is not None
        try:
            check_admin(msg.from_handle, self.config.security.admins)
            request = parse_forget(op.args, tz=self.config.tz)
        except AccessDenied as exc:
            log.warning("forget refused: @%s is not an admin (message %s)", msg.from_handle, msg.message_id)
            await self._reply(msg, error_reply(str(exc)))
            return
        except QueryError as exc:
            await self._reply(msg, error_reply(str(exc)))
            return
        count = await self._eraser.forget(request)  # storage errors propagate: redelivered, then retried
        if count:
            await self._index.save(self.config.index_path)  # the vectors leave the file on disk now
        log.warning("forget by @%s (%s, by %s): %d events deleted", msg.from_handle,
                    "authenticated" if self.config.security.authenticated_senders else "claimed handle",
                    request.selector, count)
        await self._reply(msg, json.dumps({"status": "forgotten", "count": count}))

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
