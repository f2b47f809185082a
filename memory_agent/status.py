"""What the daemon says about itself at any moment, and the readiness rule read from it.

:class:`DaemonStatus` is a snapshot taken without I/O (:meth:`memory_agent.daemon.MemoryDaemon.status`
reads flags and counters already in memory: no SQLite query, no NATS request), so the readiness
endpoint and the metrics never wait in the queue of the work they watch (the practice of arq's
health record). :func:`readiness` is pure: it turns a snapshot into the checks ``/readyz`` answers with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CHECKS", "DaemonStatus", "EmbedderState", "Phase", "Readiness", "readiness"]

Phase = Literal["starting", "serving", "stopping", "stopped"]
EmbedderState = Literal["loading", "ready", "degraded"]
"""``ready``: reports are embedded as they are stored. ``degraded``: reports are stored but their
embeddings wait (the embedder failed or falls behind); questions are answered by full-text search and
filters until it catches up. Both are ready to serve."""

#: The readiness checks, in the order ``/readyz`` lists them.
CHECKS = ("nats", "handle", "store", "index", "embedder")


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """A snapshot of the daemon (no I/O to take it). Counts are exact at the moment it was taken.

    ``events``: rows in SQLite; ``index_vectors``: vectors in the FAISS index; ``embedding_backlog``:
    reports stored but not yet embedded, the oldest received ``embedding_backlog_age_s`` seconds ago
    (None when there is none); ``in_flight``: messages whose handlers run now; ``uptime_s``: seconds
    since serving began (0 before); ``storage``: ``ok``, ``unavailable`` (locked or full: reports wait
    unacknowledged) or ``lost`` (the database file disappeared), with ``storage_detail`` saying why.
    """

    phase: Phase
    handle: str
    nats_connected: bool
    handle_registered: bool
    store_open: bool
    index_loaded: bool
    embedder: EmbedderState
    model: str
    events: int
    index_vectors: int
    index_kind: str
    embedding_backlog: int
    in_flight: int
    uptime_s: float
    embedding_backlog_age_s: float | None = None
    storage: Literal["ok", "unavailable", "lost"] = "ok"
    storage_detail: str = ""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of ``/readyz``: ``ready`` when every check passes; ``checks`` maps each name of
    :data:`CHECKS` to ``(passed, detail)``."""

    ready: bool
    phase: Phase
    checks: dict[str, tuple[bool, str]]

    def to_json(self) -> dict[str, Any]:
        """``{"ready": bool, "phase": str, "checks": {"nats": {"ok": bool, "detail": str}, ...}}``."""
        return {
            "ready": self.ready,
            "phase": self.phase,
            "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in self.checks.items()},
        }

    def failing(self) -> list[str]:
        """``name: detail`` of each check that fails."""
        return [f"{name}: {detail}" for name, (ok, detail) in self.checks.items() if not ok]


def readiness(status: DaemonStatus) -> Readiness:
    """Ready while serving with NATS connected, the handle registered, the store open and writable, the
    index loaded (or the embedder degraded: answers then use SQLite and FTS5 only) and the embedder ready
    or degraded (reports are then still stored; see :data:`EmbedderState`)."""
    embedder_ok = status.embedder in ("ready", "degraded")
    store_ok = status.store_open and status.storage == "ok"
    store_detail = (f"open, {status.events} events" if store_ok
                    else status.storage_detail or f"storage {status.storage}" if status.store_open else "not open")
    index_ok = status.index_loaded or status.embedder == "degraded"
    index_detail = (f"{status.index_kind}, {status.index_vectors} vectors" if status.index_loaded
                    else "none: the embedding model is unavailable" if index_ok else "not loaded")
    age = f", oldest {status.embedding_backlog_age_s:.0f} s" if status.embedding_backlog_age_s is not None else ""
    checks = {
        "nats": (status.nats_connected, "connected" if status.nats_connected else "not connected (reconnecting)"),
        "handle": (status.handle_registered,
                   f"@{status.handle} registered" if status.handle_registered else f"@{status.handle} not registered"),
        "store": (store_ok, store_detail),
        "index": (index_ok, index_detail),
        "embedder": (embedder_ok, f"{status.embedder} ({status.model or 'no model yet'}), "
                                  f"{status.embedding_backlog} waiting{age}"),
    }
    ready = status.phase == "serving" and all(ok for ok, _ in checks.values())
    return Readiness(ready=ready, phase=status.phase, checks=checks)
