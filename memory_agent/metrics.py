"""The daemon's Prometheus metrics (prometheus-client), one registry per daemon.

Names and units follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/):
a ``memory_`` prefix, ``_total`` on counters, base units (``_seconds``), and labels with a small fixed
set of values only: never a trace id, a handle or a message id.

Counted as messages are handled (:meth:`Metrics.observe`, fed by :class:`memory_agent.handlers.Outcome`):

* ``memory_reports_total{result}``: stored, duplicate, rejected (bad input), failed (storage error;
  redelivered);
* ``memory_questions_total{intent,result}`` and ``memory_question_duration_seconds{intent}``: intent
  list, count, timeline, why, search (``none`` when a question was refused before it was understood);
  result answered, rejected, failed;
* ``memory_operations_total{op,result}``: ``stats``, ``forget`` (``unknown`` for any other name);
* ``memory_ingest_batch_size``: reports newly stored per ingest transaction;
* ``memory_llm_requests_total{result}`` and ``memory_llm_duration_seconds``: the optional summarizer
  (ok, rejected: cited no retrieved event, timeout, error).

Read from one place at scrape time, :class:`memory_agent.status.DaemonStatus` (no I/O):
``memory_events``, ``memory_index_vectors``, ``memory_embedding_backlog``, ``memory_in_flight_messages``,
``memory_ready`` and ``memory_build_info{version,model,index_kind}``; from the JetStream consumer
(:class:`memory_agent.inbox.InboxWatcher`, polled in the background): ``memory_inbox_pending_messages``
and ``memory_inbox_ack_pending_messages``. The ``process_*`` metrics of prometheus-client come too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from memory_agent import __version__
from memory_agent.errors import SummaryRejected
from memory_agent.handlers import OPERATIONS, Outcome
from memory_agent.status import DaemonStatus, readiness

if TYPE_CHECKING:
    from memory_agent.inbox import InboxCounts
    from memory_agent.protocols import Summarizer
    from memory_agent.types import StoredEvent

__all__ = ["INTENTS", "MeteredSummarizer", "Metrics"]

#: The intents a question is answered by (:data:`memory_agent.types.Intent`), plus ``none``.
INTENTS = ("list", "count", "timeline", "why", "search", "none")
_REPORT_RESULTS = ("stored", "duplicate", "rejected", "failed")
_QUESTION_RESULTS = ("answered", "rejected", "failed")
_LLM_RESULTS = ("ok", "rejected", "timeout", "error")
# Question latency: from a list answered from memory (ms) to a ranked search behind a busy embedder (s).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_LLM_SECONDS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)


class _StatusCollector(Collector):
    """Gauges read at scrape time from the daemon's status and the inbox watcher's last poll."""

    def __init__(self, status: Callable[[], DaemonStatus], inbox: Callable[[], InboxCounts | None]) -> None:
        self._status = status
        self._inbox = inbox

    def collect(self) -> Iterator[Metric]:
        s = self._status()
        yield GaugeMetricFamily("memory_events", "Events stored in SQLite.", value=s.events)
        yield GaugeMetricFamily("memory_index_vectors", "Vectors in the FAISS index.", value=s.index_vectors)
        yield GaugeMetricFamily("memory_embedding_backlog", "Reports received but not yet embedded.",
                                value=s.embedding_backlog)
        yield GaugeMetricFamily("memory_in_flight_messages", "Messages whose handlers are running.",
                                value=s.in_flight)
        yield GaugeMetricFamily("memory_ready", "1 when /readyz passes, else 0.", value=int(readiness(s).ready))
        info = GaugeMetricFamily("memory_build_info", "Version, model and index kind (value 1).",
                                 labels=["version", "model", "index_kind"])
        info.add_metric([__version__, s.model, s.index_kind], 1)
        yield info
        counts = self._inbox()
        if counts is not None:
            yield GaugeMetricFamily("memory_inbox_pending_messages",
                                    "Messages in @memory's durable inbox not yet delivered to it (JetStream).",
                                    value=counts.pending)
            yield GaugeMetricFamily("memory_inbox_ack_pending_messages",
                                    "Messages delivered to @memory and not yet acknowledged (JetStream).",
                                    value=counts.ack_pending)


class Metrics:
    """The metrics of one daemon, in their own :class:`~prometheus_client.CollectorRegistry` (several
    daemons in one process, as in the tests, never share series).

    ``status``: the daemon's snapshot function (called at each scrape; must do no I/O). ``inbox``: the last
    JetStream counts of the daemon's inbox, ``None`` while unknown.
    """

    def __init__(self, status: Callable[[], DaemonStatus],
                 inbox: Callable[[], InboxCounts | None] = lambda: None) -> None:
        r = self.registry = CollectorRegistry()
        self.reports = Counter("memory_reports", "Reports handled, by result.", ["result"], registry=r)
        self.questions = Counter("memory_questions", "Questions handled, by intent and result.",
                                 ["intent", "result"], registry=r)
        self.question_seconds = Histogram("memory_question_duration_seconds",
                                          "Time from a question's arrival to its answer.", ["intent"],
                                          buckets=_SECONDS, registry=r)
        self.operations = Counter("memory_operations", "Operations ({\"op\": ...}) handled, by op and result.",
                                  ["op", "result"], registry=r)
        self.ingest_batch = Histogram("memory_ingest_batch_size", "Reports newly stored per ingest transaction.",
                                      buckets=_BATCH, registry=r)
        self.llm_requests = Counter("memory_llm_requests", "Summaries asked of the LLM, by result.", ["result"],
                                    registry=r)
        self.llm_seconds = Histogram("memory_llm_duration_seconds", "Time the LLM took per summary.",
                                     buckets=_LLM_SECONDS, registry=r)
        for result in _REPORT_RESULTS:  # every series exists from the start, at 0
            self.reports.labels(result=result)
        for intent in INTENTS:
            for result in _QUESTION_RESULTS:
                if intent != "none" or result != "answered":
                    self.questions.labels(intent=intent, result=result)
            if intent != "none":
                self.question_seconds.labels(intent=intent)
        for op in OPERATIONS:
            self.operations.labels(op=op, result="ok")
        for result in _LLM_RESULTS:
            self.llm_requests.labels(result=result)
        r.register(_StatusCollector(status, inbox))
        ProcessCollector(registry=r)

    def observe(self, outcome: Outcome) -> None:
        """Count one handled message (see :class:`memory_agent.handlers.Outcome`)."""
        if outcome.kind == "report":
            self.reports.labels(result=outcome.result).inc()
        elif outcome.kind == "question":
            intent = outcome.intent if outcome.intent in INTENTS else "none"
            self.questions.labels(intent=intent, result=outcome.result).inc()
            if outcome.result == "answered":
                self.question_seconds.labels(intent=intent).observe(outcome.seconds)
        else:
            self.operations.labels(op=outcome.intent, result=outcome.result).inc()

    def observe_batch(self, stored: int) -> None:
        """One ingest transaction stored ``stored`` new reports."""
        self.ingest_batch.observe(stored)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the text format the ``Accept`` header asks for (Prometheus text or OpenMetrics):
        ``(body, content_type)``."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MeteredSummarizer:
    """A :class:`~memory_agent.protocols.Summarizer` that counts and times the one it wraps
    (``memory_llm_requests_total{result}``, ``memory_llm_duration_seconds``); raises what it raises."""

    def __init__(self, inner: Summarizer, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def summarize(self, question: str, events: Sequence[StoredEvent], extractive: str) -> str:
        started = time.perf_counter()
        result = "error"
        try:
            text = await self._inner.summarize(question, events, extractive)
            result = "ok"
            return text
        except SummaryRejected:
            result = "rejected"
            raise
        except TimeoutError:
            result = "timeout"
            raise
        finally:
            self._metrics.llm_requests.labels(result=result).inc()
            self._metrics.llm_seconds.observe(time.perf_counter() - started)
