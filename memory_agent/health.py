"""How the daemon is doing, as values a status endpoint can read without waiting: ready, degraded or not.

* :class:`Outage` follows one dependency (storage) through failures: the first failure is logged once
  with its cause, the recovery once with how long it lasted, and in between it only counts.
* :class:`Health` is the daemon's answer to "can you take work?": ``ok``; ``degraded`` (ready: reports
  are stored and questions answered, but without semantic search, because the embedding model is
  unavailable or failing); ``not_ready`` (storage unavailable or gone, or the daemon is starting or
  stopping). :meth:`memory_agent.daemon.MemoryDaemon.health` builds it from memory only: a readiness
  probe never waits in a queue behind the work it is asked about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["EmbeddingState", "Health", "HealthStatus", "Outage", "StorageState", "retry_delay"]

HealthStatus = Literal["ok", "degraded", "not_ready"]
StorageState = Literal["ok", "unavailable", "lost"]
EmbeddingState = Literal["ok", "loading", "unavailable", "failing"]
"""``loading``: the model is being loaded; ``unavailable``: it failed to load (retried on an interval);
``failing``: it loaded but every encode fails (retried on an interval)."""


def retry_delay(attempt: int, *, cap: float = 15.0) -> float:
    """Seconds to wait before attempt ``attempt + 1`` of something that failed transiently: 0.25 s doubling
    to ``cap`` (0.25, 0.5, 1, 2, 4, 8, 15, 15 ...)."""
    return min(0.25 * 2.0 ** min(attempt, 16), cap)


class Outage:
    """One dependency's availability: :meth:`failed` on each failure, :meth:`recovered` on each success.

    Logs the first failure of an outage at ERROR with its cause and what happens meanwhile (``impact``),
    the recovery at WARNING with the outage's duration and failure count; failures in between are only
    counted (one log line per outage, not per report). ``clock``: seconds since the epoch, UTC.
    """

    def __init__(self, what: str, *, impact: str, logger: logging.Logger,
                 clock: Callable[[], float] = time.time) -> None:
        self.what = what
        self.impact = impact
        self._log = logger
        self._clock = clock
        self.since: float | None = None
        self.cause = ""
        self.failures = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, cause: str, exc: BaseException | None = None) -> float:
        """Record a failure with its ``cause``; returns when the outage began (seconds since the epoch)."""
        self.failures += 1
        if self.since is None:
            self.since = self._clock()
            self.cause = cause
            self.outages += 1
            detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
            self._log.error("%s unavailable: %s%s; %s", self.what, cause, detail, self.impact)
        return self.since

    def recovered(self) -> None:
        """Record a success; ends the outage (logged once) if there was one."""
        if self.since is None:
            return
        lasted = self._clock() - self.since
        self._log.warning("%s is back after %.1f s (%s; %d failed attempts meanwhile)", self.what, lasted,
                          self.cause, self.failures)
        self.since = None
        self.cause = ""
        self.failures = 0

    def to_json(self) -> dict[str, Any]:
        return {"down_since_s": None if self.since is None else round(self._clock() - self.since, 3),
                "cause": self.cause or None, "outages": self.outages}


@dataclass(frozen=True, slots=True)
class Health:
    """Readiness and its reasons.

    ``ready``: reports are accepted and questions answered (``ok`` or ``degraded``). ``reasons``: one
    sentence per problem. ``backlog``: stored events without a vector yet; ``backlog_age_s``: seconds
    since the oldest of them was received (``None`` when there is none). ``ingest_queue``: reports
    waiting to be committed.
    """

    status: HealthStatus
    storage: StorageState
    embedding: EmbeddingState
    backlog: int
    backlog_age_s: float | None
    ingest_queue: int
    reasons: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.status != "not_ready"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ready": self.ready,
            "storage": self.storage,
            "embedding": self.embedding,
            "backlog": self.backlog,
            "backlog_age_s": None if self.backlog_age_s is None else round(self.backlog_age_s, 3),
            "ingest_queue": self.ingest_queue,
            "reasons": list(self.reasons),
        }
