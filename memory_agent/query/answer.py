"""Answering a question from stored events, by rules: list, count, timeline, why, or ranked search.

The answer is extractive: every sentence names the events it rests on (when, who reported, what,
trace id, ``#id``). An optional :class:`~memory_agent.protocols.Summarizer` may rewrite it; if that
fails the extractive answer stands, with a note.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from memory_agent.errors import SummaryRejected, internal_error_id
from memory_agent.query.retrieval import Hit

if TYPE_CHECKING:
    from memory_agent.protocols import Clock, Summarizer
    from memory_agent.query.retrieval import HybridRetriever
    from memory_agent.store.events import EventStore
from memory_agent.query.text import STOPWORDS, clip, tokenize, word_set
from memory_agent.query.understand import understand
from memory_agent.types import Filters, Intent, StoredEvent, TimeWindow, Understanding, Vocabulary
from memory_agent.wire import Question, iso_utc

__all__ = ["Answer", "Answerer", "ScoredEvent", "event_json"]

log = logging.getLogger(__name__)

# Words that ask "what happened" without saying what (besides stop words): a list question made only
# of these lists everything in its window.
_GENERIC = word_set(
    "happen happened happening occur occurred event events report reported reports anything everything "
    "list show display give get find tell please go went on all any thing things recorded note noted see seen"
)
_HIDDEN_FIELDS = frozenset({"event", "trace_id", "occurred_at"})
_MAX_FIELD_CHARS = 240


def event_json(event: StoredEvent, score: float) -> dict[str, Any]:
    """One event as answers carry it: ``{"id", "message_id", "trace_id", "from_handle", "sender_verified",
    "event", "occurred_at" (ISO-8601 UTC), "payload", "score"}`` (the timeline page shows the same)."""
    return {
        "id": event.id,
        "message_id": event.message_id,
        "trace_id": event.trace_id,
        "from_handle": event.from_handle,
        "sender_verified": event.sender_verified,
        "event": event.event,
        "occurred_at": iso_utc(event.occurred_at),
        "payload": event.payload,
        "score": round(score, 6),
    }


@dataclass(frozen=True, slots=True)
class ScoredEvent:
    event: StoredEvent
    score: float


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer: readable ``text``, the ``events`` it rests on (best first), the window it covered.

    ``total`` is the exact number of matches for list/count/timeline answers (``events`` may be capped).
    """

    text: str
    events: tuple[ScoredEvent, ...]
    window: TimeWindow | None
    intent: Intent
    total: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The structured-question reply of the wire contract."""
        return {
            "answer": self.text,
            "events": [event_json(s.event, s.score) for s in self.events],
            "window": None
            if self.window is None
            else {
                "since": None if self.window.since is None else iso_utc(self.window.since),
                "until": None if self.window.until is None else iso_utc(self.window.until),
            },
        }


class Answerer:
    """Turns a :class:`~memory_agent.wire.Question` into an :class:`Answer`.

    ``clock`` returns seconds since the epoch (tests fix it); ``tz`` is where days and weeks are read.
    """

    def __init__(
        self,
        store: EventStore,
        retriever: HybridRetriever,
        *,
        tz: tzinfo,
        vocabulary: Vocabulary,
        default_limit: int = 20,
        max_list: int = 1000,
        summarizer: Summarizer | None = None,
        summarizer_events: int = 30,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._retriever = retriever
        self._tz = tz
        self.vocabulary = vocabulary
        self._default_limit = default_limit
        self._max_list = max_list
        self._summarizer = summarizer
        self._summarizer_events = summarizer_events
        self._clock = clock

    def observe(self, events: Sequence[StoredEvent] | Sequence[Any]) -> None:
        """Add newly stored events' names to the vocabulary used to recognise them in questions."""
        new_events = {e.event for e in events} - self.vocabulary.events
        new_services = {e.service for e in events if e.service} - self.vocabulary.services
        new_handles = {e.from_handle for e in events} - self.vocabulary.handles
        if new_events or new_services or new_handles:
            self.vocabulary = Vocabulary(
                events=self.vocabulary.events | new_events,
                services=self.vocabulary.services | new_services,
                handles=self.vocabulary.handles | new_handles,
            )

    async def answer(self, question: Question) -> Answer:
        """Answer by the rules (see :mod:`memory_agent.query.understand`); relative phrases are read from
        ``question.as_of`` (else the clock's now); ``mode="search"`` skips intents and inferred filters."""
        reference = self._clock() if question.as_of is None else question.as_of
        now = datetime.fromtimestamp(reference, tz=self._tz)
        u = understand(question.text, now=now, tz=self._tz, vocabulary=self.vocabulary)
        if question.as_of is not None:
            u = replace(u, notes=(*u.notes, f"as_of={iso_utc(question.as_of)}"))
        u = _apply_structured(u, question)
        if u.intent == "timeline":
            result = await self._timeline(u, question)
        elif u.intent == "why":
            result = await self._why(u, question)
        elif u.intent in ("list", "count") and (not u.filters.is_empty() or _is_generic(u.text)):
            result = await self._listing(u, question)
        else:
            result = await self._search(u, question)
        if self._summarizer is not None and result.events:
            result = await self._summarize(question.text, result)
        return result

    # --- intents -------------------------------------------------------------------------------

    async def _listing(self, u: Understanding, q: Question) -> Answer:
        cap = min(q.limit or self._max_list, self._max_list)
        total = await self._store.count(u.window, u.filters)
        rows = await self._store.select(u.window, u.filters, limit=cap, order="asc")
        what = _describe(u)
        if u.intent == "count":
            head = f"{total} {_plural(total, 'event')} {what}."
        elif total == 0:
            head = f"No events {what}."
        else:
            head = f"{total} {_plural(total, 'event')} {what}:"
        lines = [head, *(self._line(e) for e in rows)]
        if total > len(rows):
            lines.append(f"... and {total - len(rows)} more (ask with a narrower window or a higher limit).")
        return Answer(
            text="\n".join(lines),
            events=tuple(ScoredEvent(e, 1.0) for e in rows),
            window=u.window,
            intent=u.intent,
            total=total,
            notes=u.notes,
        )

    async def _timeline(self, u: Understanding, q: Question) -> Answer:
        cap = min(q.limit or self._max_list, self._max_list)
        filters = u.filters
        notes = list(u.notes)
        if not filters.trace_id:
            hits = await self._retriever.search(u.text, u.window, filters, limit=1)
            if not hits:
                return self._nothing(u, "I found no event that matches, so there is no timeline to give.")
            top = (await self._store.get([hits[0].id]))[0]
            notes.append(f"trace={top.trace_id} from best match #{top.id}")
            filters = Filters(trace_id=(top.trace_id,))
        rows = await self._store.select(None, filters, limit=cap, order="asc")
        if not rows:
            return self._nothing(u, f"No events carry trace {', '.join(filters.trace_id)}.")
        total = await self._store.count(None, filters)
        traces = ", ".join(filters.trace_id)
        span = f"{self._when(rows[0].occurred_at)} to {self._when(rows[-1].occurred_at)}"
        lines = [f"Timeline of trace {traces}: {total} {_plural(total, 'event')}, {span}:"]
        lines += [self._line(e) for e in rows]
        return Answer(
            text="\n".join(lines),
            events=tuple(ScoredEvent(e, 1.0) for e in rows),
            window=u.window,
            intent="timeline",
            total=total,
            notes=tuple(notes),
        )

    async def _why(self, u: Understanding, q: Question) -> Answer:
        hits, _filters, relaxed = await self._search_relaxing(u, limit=q.limit or self._default_limit)
        if not hits:
            return self._nothing(u, f"No events {_describe(u)}, so I cannot say why.")
        top_hit = hits[0]
        top = (await self._store.get([top_hit.id]))[0]
        related = [
            e for e in await self._store.select(None, Filters(trace_id=(top.trace_id,)), limit=self._max_list)
            if e.id != top.id
        ]
        lines = [f"Best match: {self._line(top).lstrip('- ')}"]
        if related:
            lines.append(f"Reports on the same trace {top.trace_id}, in time order:")
            lines += [self._line(e) for e in related]
        else:
            lines.append(f"No other report carries trace {top.trace_id}.")
        if relaxed:
            lines.append(f"(Nothing matched {relaxed}; searched without it.)")
        events = [ScoredEvent(top, top_hit.score), *(ScoredEvent(e, top_hit.score) for e in related)]
        return Answer(
            text="\n".join(lines), events=tuple(events), window=u.window, intent="why", notes=u.notes
        )

    async def _search(self, u: Understanding, q: Question) -> Answer:
        limit = q.limit or self._default_limit
        hits, filters, relaxed = await self._search_relaxing(u, limit=limit)
        waiting = await self._store.count_unembedded(u.window, filters)
        if waiting:  # reports not embedded yet are found by their words (BM25) and filters only
            note = f"{waiting} {_plural(waiting, 'event')} in this window not embedded yet: found by words only"
            u = replace(u, notes=(*u.notes, note))
        if not hits:
            return self._nothing(u, f"No events {_describe(u)}." + (f"\n({u.notes[-1]}.)" if waiting else ""))
        by_id = {e.id: e for e in await self._store.get([h.id for h in hits])}
        scored = [ScoredEvent(by_id[h.id], h.score) for h in hits if h.id in by_id]
        lines = [f"The {len(scored)} most relevant {_plural(len(scored), 'event')} {_describe(u)}:"]
        lines += [self._line(s.event) for s in scored]
        if relaxed:
            lines.append(f"(Nothing matched {relaxed}; searched without it.)")
        if waiting:
            lines.append(f"({u.notes[-1]}.)")
        return Answer(
            text="\n".join(lines), events=tuple(scored), window=u.window, intent=u.intent, notes=u.notes
        )

    async def _search_relaxing(self, u: Understanding, *, limit: int) -> tuple[list[Hit], Filters, str]:
        """Search with the recognised filters; if that finds nothing, drop the soft ones (event, service)."""
        hits = await self._retriever.search(u.text, u.window, u.filters, limit=limit)
        if hits or not (u.filters.event or u.filters.service):
            return hits, u.filters, ""
        relaxed = replace(u.filters, event=(), service=())
        dropped = ", ".join(f"{k}={'/'.join(v)}" for k, v in
                            (("event", u.filters.event), ("service", u.filters.service)) if v)
        return await self._retriever.search(u.text, u.window, relaxed, limit=limit), relaxed, dropped

    async def _summarize(self, question: str, result: Answer) -> Answer:
        assert self._summarizer is not None
        events = [s.event for s in result.events[: self._summarizer_events]]
        try:
            summary = await self._summarizer.summarize(question, events, result.text)
        except Exception as exc:  # any failure of the optional LLM leaves the extractive answer
            if isinstance(exc, SummaryRejected):  # our own check of the model's reply: safe to say
                reason = str(exc)
            elif isinstance(exc, TimeoutError):
                reason = "it timed out"
            else:
                reason = f"error {internal_error_id()}"
            log.warning("summarizer failed (%s): %s: %s; returning the extractive answer", reason,
                        type(exc).__name__, clip(str(exc), 200))
            note = f"(LLM summary unavailable: {reason}; this is the extractive answer.)"
            return replace(result, text=f"{result.text}\n{note}")
        return replace(result, text=f"{summary}\n\nBased on:\n{result.text}")

    # --- text ----------------------------------------------------------------------------------

    def _nothing(self, u: Understanding, text: str) -> Answer:
        return Answer(text=text, events=(), window=u.window, intent=u.intent, total=0, notes=u.notes)

    def _when(self, seconds: float) -> str:
        return datetime.fromtimestamp(seconds, tz=self._tz).strftime("%a %Y-%m-%d %H:%M %Z")

    def _line(self, e: StoredEvent) -> str:
        """``- [#12] Fri 2026-11-20 14:02 UTC, @deploy reported rollback (service: api-gateway, ...), trace t-81``."""
        fields = ", ".join(
            f"{k}: {_field(v)}" for k, v in e.payload.items() if k not in _HIDDEN_FIELDS and v is not None
        )
        detail = f" ({fields})" if fields else ""
        told = f"{self._when(e.occurred_at)}, @{e.from_handle} reported {e.event}{detail}, trace {e.trace_id}"
        # A report's own "[#12]" is shown as "[ #12]": only @memory's citations read [#id] in an answer.
        return f"- [#{e.id}] {told.replace('[#', '[ #')}"


def _apply_structured(u: Understanding, q: Question) -> Understanding:
    """Structured ``since``/``until`` replace a time phrase; structured filters replace recognised ones.

    In ``mode="search"`` the intent is always ranked search and only the structured filters narrow: names
    in the text (handles, event types, services, trace ids) are searched as words.
    """
    window = u.window
    if q.since is not None or q.until is not None:
        window = TimeWindow(since=q.since, until=q.until)
    f = q.filters
    if q.mode == "search":
        notes = (*u.notes, "mode=search: ranked search; names in the text searched as words, not filters")
        return replace(u, intent="search", window=window, filters=f, notes=notes)
    filters = Filters(
        event=f.event or u.filters.event,
        service=f.service or u.filters.service,
        from_handle=f.from_handle or u.filters.from_handle,
        trace_id=f.trace_id or u.filters.trace_id,
    )
    return replace(u, window=window, filters=filters)


def _is_generic(text: str) -> bool:
    words = [w for w in tokenize(text) if w not in STOPWORDS and w not in _GENERIC]
    return not words


def _describe(u: Understanding) -> str:
    parts = []
    f = u.filters
    if f.event:
        parts.append("of type " + " or ".join(f.event))
    if f.service:
        parts.append("for " + " or ".join(f.service))
    if f.from_handle:
        parts.append("reported by " + " or ".join(f"@{h}" for h in f.from_handle))
    if f.trace_id:
        parts.append("on trace " + " or ".join(f.trace_id))
    if u.window_phrase:
        parts.append(u.window_phrase)
    elif u.window is not None:
        since = "the beginning" if u.window.since is None else iso_utc(u.window.since)
        until = "now" if u.window.until is None else iso_utc(u.window.until)
        parts.append(f"between {since} and {until}")
    return " ".join(parts) if parts else "in memory"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _field(value: Any) -> str:
    return clip(value if isinstance(value, str) else str(value), _MAX_FIELD_CHARS)
