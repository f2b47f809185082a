"""Value types shared by ingest, storage, retrieval and answering.

Times are floats: seconds since the epoch, UTC. Windows are half-open: ``since <= t < until``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Filters",
    "InsertResult",
    "Intent",
    "NewEvent",
    "StoredEvent",
    "TimeWindow",
    "Understanding",
    "Vocabulary",
]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A validated report, ready to be embedded and stored.

    ``event`` is lower case; ``service`` is the payload's top-level ``"service"`` string, if any;
    ``payload`` is the original JSON object; ``text`` is what gets embedded and full-text indexed.
    ``sender_verified``: ``from_handle`` was authenticated by the NATS server (its permissions tie
    each user to its handle, ``security.authenticated_senders``), not only claimed by the sender.
    """

    message_id: str
    session: str
    from_handle: str
    trace_id: str
    event: str
    service: str | None
    occurred_at: float
    received_at: float
    payload: dict[str, Any]
    text: str
    sender_verified: bool = field(default=False, kw_only=True)

    @property
    def sent(self) -> tuple[str, str]:
        """``(from_handle, message_id)``: what identifies a report across redeliveries (a message id is unique
        among one sender's messages, docs/mesh.md "Exactly once")."""
        return self.from_handle, self.message_id


@dataclass(frozen=True, slots=True)
class StoredEvent(NewEvent):
    """A stored event: a :class:`NewEvent` with its SQLite id (the embedding is not loaded here)."""

    id: int


@dataclass(frozen=True, slots=True)
class InsertResult:
    """Outcome of storing one event: its id and whether that ``message_id`` was already stored."""

    id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Half-open interval ``[since, until)`` in seconds since the epoch, UTC; ``None`` is unbounded.

    ``future_skew`` (seconds, ``None`` = off) also leaves out events dated more than that after they
    were received (``occurred_at - received_at > future_skew``): a window that reaches the present
    does not count reports from a clock running ahead (issue 14; ``Config.max_clock_skew``).
    """

    since: float | None = None
    until: float | None = None
    future_skew: float | None = None

    def contains(self, t: float, received_at: float | None = None) -> bool:
        """Is an event at ``t`` (received at ``received_at``, when known) inside the window?"""
        if self.future_skew is not None and received_at is not None and t - received_at > self.future_skew:
            return False
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


@dataclass(frozen=True, slots=True)
class Filters:
    """Exact-match filters: values within one field are OR-ed, fields are AND-ed; empty means any."""

    event: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    from_handle: tuple[str, ...] = ()
    trace_id: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.event or self.service or self.from_handle or self.trace_id)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Distinct values already stored, used to recognise names in questions."""

    events: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    handles: frozenset[str] = frozenset()


Intent = Literal["list", "count", "timeline", "why", "search"]


@dataclass(frozen=True, slots=True)
class Understanding:
    """What a question asks, recognised by rules (no LLM).

    ``intent``: list every match / count them / timeline of a trace / why (match + same-trace reports) /
    search (ranked). ``window`` is ``None`` when the question names no time. ``filters`` narrow the search
    in SQL. ``text`` is the question with the time phrase removed, used for FTS5 and the embedding.
    ``unknown_names``: words written as names (``geo-router``, ``@cost-watcher``, "the backup agent")
    that match no stored event type, service or handle. ``proper_names``: words written as proper names
    (``Kafka``, ``GraphQL``) that no stored name took; the answerer keeps only events about them
    (:mod:`memory_agent.query.grounding`). ``residual``: the question's other words (lower
    case, stop words, intent cues, names and the time phrase taken out), what a search still has to match;
    ``named``: the question's own words gave filters (set by the answerer before structured filters apply).
    """

    intent: Intent
    window: TimeWindow | None
    filters: Filters
    text: str
    window_phrase: str | None = None
    notes: tuple[str, ...] = field(default=())
    unknown_names: tuple[str, ...] = ()
    proper_names: tuple[str, ...] = ()
    residual: tuple[str, ...] = ()
    named: bool = False
