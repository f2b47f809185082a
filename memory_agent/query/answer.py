"""Answering a question from stored events, by rules: list, count, timeline, why, or ranked search.

The answer is extractive: every line names the event it rests on (when, who reported, what, trace id,
``#id``), and says how the question was read (the window in words with its zone, the filters). Ranked
answers hold only events whose fused score reaches the relevance floor (``[retrieval] min_score``,
:mod:`memory_agent.query.retrieval`); with none above it the answer says that nothing matches instead
of listing whatever is stored. A trace id nobody reported, or a name no report mentions, is answered
"none" with near matches, never with another trace. An optional
:class:`~memory_agent.protocols.Summarizer` may rewrite the text; if that fails the extractive answer
stands, with a note.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from memory_agent.errors import SummaryRejected, internal_error_id
from memory_agent.query.grounding import Grounding
from memory_agent.query.render import Budget, describe, event_line, plural, when
from memory_agent.query.retrieval import Hit
from memory_agent.query.text import STOPWORDS, clip, tokenize, word_set
from memory_agent.query.traces import trace_candidates
from memory_agent.query.understand import understand
from memory_agent.query.vocabulary import VocabularyIndex
from memory_agent.query.why import choose_incident, equal_matches, is_cause, is_symptom
from memory_agent.types import Filters, Intent, StoredEvent, TimeWindow, Understanding, Vocabulary
from memory_agent.wire import Question, iso_utc
from mesh.constants import DEFAULT_MAX_PAYLOAD

if TYPE_CHECKING:
    from collections.abc import Sequence

    from memory_agent.protocols import Clock, Summarizer
    from memory_agent.query.retrieval import HybridRetriever
    from memory_agent.store.events import EventStore

__all__ = ["Answer", "Answerer", "ScoredEvent", "event_json"]

log = logging.getLogger(__name__)

# Words that ask "what happened" without saying what (besides stop words): a list question made only
# of these lists everything in its window; with filters, these and one other word ("Which services were
# rolled back?") still ask for the list.
_GENERIC = word_set(
    "happen happened happening occur occurred event events report reported reports anything everything "
    "list show display give get find tell please go went on all any thing things recorded note noted see seen "
    "made make done times time every found detected identified flagged raised logged filed noticed spotted "
    "observed got came"
)
#: Words left in a question with filters beyond which it is a search within the filters, not a list.
LIST_STRAY_WORDS = 1
_WHY_CANDIDATES = 50
_NEAR = 3


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
    """An answer: readable ``text``, the ``events`` it rests on (best first), how the question was read.

    ``total``: the exact number of matches (list, count, timeline) or of events above the relevance
    floor among the ranked candidates (search); ``more``: matches not in ``events``. ``filters`` and
    ``window`` are what was applied, ``notes`` how each was decided.
    """

    text: str
    events: tuple[ScoredEvent, ...]
    window: TimeWindow | None
    intent: Intent
    total: int | None = None
    notes: tuple[str, ...] = field(default=())
    filters: Filters = field(default_factory=Filters)
    more: int = 0

    def to_json(self, *, max_bytes: int = DEFAULT_MAX_PAYLOAD - 4096) -> dict[str, Any]:
        """The structured-question reply of the wire contract, within ``max_bytes`` of UTF-8 JSON: events
        that do not fit are left out from the end and counted in ``"left_out"`` (with a note)."""
        events = [event_json(s.event, s.score) for s in self.events]
        out: dict[str, Any] = {
            "answer": self.text,
            "events": events,
            "window": None
            if self.window is None
            else {
                "since": None if self.window.since is None else iso_utc(self.window.since),
                "until": None if self.window.until is None else iso_utc(self.window.until),
            },
            "intent": self.intent,
            "filters": {k: list(v) for k, v in (("event", self.filters.event), ("service", self.filters.service),
                        ("from_handle", self.filters.from_handle), ("trace_id", self.filters.trace_id)) if v},
            "total": self.total,
            "more": self.more,
            "notes": list(self.notes),
        }
        sizes = [len(json.dumps(e, ensure_ascii=False).encode()) + 2 for e in events]
        room = max_bytes - len(json.dumps({**out, "events": []}, ensure_ascii=False).encode()) - 200
        kept = 0
        while kept < len(events) and sizes[kept] <= room:
            room -= sizes[kept]
            kept += 1
        if kept < len(events):
            out["events"] = events[:kept]
            out["left_out"] = len(events) - kept
            out["notes"] = [*out["notes"], f"{len(events) - kept} events left out to fit one mesh message "
                                           f"({max_bytes // 1024} KiB): ask with a smaller limit"]
        return out


class Answerer:
    """Turns a :class:`~memory_agent.wire.Question` into an :class:`Answer`.

    ``vocabulary``: the names questions are read against (grown by :meth:`observe`). ``default_limit``:
    events in a structured ranked answer; ``text_limit``: events a text shows of a ranked answer;
    ``max_list``: events in a list or timeline; ranked answers hold only hits at or above the
    retriever's ``min_score`` (the relevance floor) and, when the question names something no report holds
    as a word ("Kafka"), only events about it by meaning (``grounding``, default a
    :class:`~memory_agent.query.grounding.Grounding` on the retriever's embedder); ``max_clock_skew``: seconds a report may be dated after its receipt and still count in a window that
    reaches the present. ``clock`` returns seconds since the epoch (tests fix it); ``tz`` is where days
    and weeks are read.
    """

    def __init__(
        self,
        store: EventStore,
        retriever: HybridRetriever,
        *,
        tz: tzinfo,
        vocabulary: VocabularyIndex | Vocabulary,
        default_limit: int = 20,
        text_limit: int = 5,
        max_list: int = 1000,
        max_clock_skew: float = 86_400.0,
        summarizer: Summarizer | None = None,
        summarizer_events: int = 30,
        grounding: Grounding | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._retriever = retriever
        self._tz = tz
        self.vocabulary = vocabulary if isinstance(vocabulary, VocabularyIndex) else VocabularyIndex.build(vocabulary)
        self._default_limit = default_limit
        self._text_limit = text_limit
        self._max_list = max_list
        self._max_clock_skew = max_clock_skew
        self._summarizer = summarizer
        self._summarizer_events = summarizer_events
        self._clock = clock
        self._grounding = grounding if grounding is not None else Grounding(store, retriever.embed)

    def observe(self, events: Sequence[StoredEvent] | Sequence[Any]) -> None:
        """Add newly stored events' names to the vocabulary (O(length of the new names), never a rebuild)."""
        self.vocabulary.add(
            events=(e.event for e in events), services=(e.service for e in events),
            handles=(e.from_handle for e in events),
        )

    async def answer(self, question: Question) -> Answer:
        """Answer by the rules (see :mod:`memory_agent.query.understand`); relative phrases are read from
        ``question.as_of`` (else the clock's now); ``mode="search"`` skips intents and inferred filters."""
        reference = self._clock() if question.as_of is None else question.as_of
        now = datetime.fromtimestamp(reference, tz=self._tz)
        known = await self._store.known_traces(trace_candidates(question.text))
        u = understand(question.text, now=now, tz=self._tz, vocabulary=self.vocabulary, traces=known)
        # Filters that name what is wanted: the question's own, or a structured event, service or sender
        # (a structured trace only scopes the question: "in this conversation").
        f = question.filters
        named = not u.filters.is_empty() or bool(f.event or f.service or f.from_handle)
        u = replace(u, named=named)
        if question.as_of is not None:
            u = replace(u, notes=(*u.notes, f"as_of={iso_utc(question.as_of)}"))
        u = _apply_structured(u, question)
        u = self._sane_window(u, reference)
        # Names written as names ("Kafka", "GraphQL", "tax-engine", "@cost-watcher") that no report holds as
        # words: only events about them by meaning are presented (memory_agent.query.grounding).
        asked = (*u.proper_names, *(n for n in u.unknown_names if not _phrase_compound(n)))
        names = tuple(await self._unmentioned(asked)) if asked else ()
        if names:
            u = replace(u, notes=(*u.notes, f"{', '.join(repr(n) for n in names)}: no report holds "
                                             f"{'it' if len(names) == 1 else 'them'} as words; only reports "
                                             "about it by meaning are presented"))
        ctx = _Ctx(u, question, reference, names)
        if question.mode != "search" and named and u.intent in ("list", "count", "why"):
            # "How many deploys did loyalty-points get?": a name nothing stored carries matches no report.
            unknown = await self._unmentioned(u.unknown_names)
            if unknown:
                return self._nothing(ctx, f"No report mentions {', '.join(repr(n) for n in unknown)}, so there "
                                          f"is nothing {describe(u.filters, u.window, u.window_phrase, tz=self._tz, now=reference)} "
                                          "about it.", f"no stored report mentions {', '.join(unknown)}")
        if u.intent == "timeline":
            result = await self._timeline(ctx)
        elif u.intent == "why":
            result = await self._why(ctx)
        elif (u.intent in ("list", "count") and (_is_generic(u.text) or (named and _asks_for_list(u)))) or (
            u.intent == "search" and question.mode != "search" and named and not _stray(u)
        ):
            result = await self._listing(ctx)
        else:
            result = await self._search(ctx)
        if ctx.judged:
            result = replace(result, notes=(*result.notes, *ctx.judged))
        if self._summarizer is not None and result.events:
            result = await self._summarize(question.text, result)
        return result

    # --- reading ---------------------------------------------------------------------------------

    def _sane_window(self, u: Understanding, now: float) -> Understanding:
        """A window that reaches the present (holds ``now``) leaves out reports dated more than
        ``max_clock_skew`` after their receipt: a clock running ahead must not make the future look recent
        (issue 14). A window wholly in the past or wholly in the future (asked for by its dates) is left as is."""
        w = u.window
        if w is None or (w.until is not None and w.until <= now) or (w.since is not None and w.since > now):
            return u
        note = f"left out: reports dated more than {self._max_clock_skew:g} s after their receipt"
        return replace(u, window=replace(w, future_skew=self._max_clock_skew), notes=(*u.notes, note))

    async def _unmentioned(self, names: tuple[str, ...]) -> list[str]:
        """The names of ``names`` that no stored report mentions (an FTS5 lookup each)."""
        return [n for n in names if not await self._store.mentions(n)]

    def _describe(self, ctx: _Ctx, filters: Filters | None = None) -> str:
        u = ctx.u
        return describe(u.filters if filters is None else filters, u.window, u.window_phrase, tz=self._tz,
                        now=ctx.now)

    def _shown(self, ctx: _Ctx) -> int:
        """Events a text shows of a ranked answer."""
        return ctx.q.limit or self._text_limit

    # --- intents -------------------------------------------------------------------------------

    async def _listing(self, ctx: _Ctx) -> Answer:
        u, q = ctx.u, ctx.q
        cap = min(q.limit or self._max_list, self._max_list)
        total = await self._store.count(u.window, u.filters)
        rows = await self._store.select(u.window, u.filters, limit=cap, order="asc")
        if ctx.names:
            about = set(await self._about(ctx, [e.id for e in rows]))
            rows = [e for e in rows if e.id in about]
            if total > cap:
                ctx.judged.append(f"judged by meaning among the first {cap} of {total} matches")
            total = len(rows)
            if not rows:
                return self._nothing(ctx, f"No events {self._describe(ctx)}.", "nothing about the names asked")
        what = self._describe(ctx)
        text = Budget()
        if u.intent == "count":
            text.add(f"{total} {plural(total, 'event')} {what}" + ("." if total == 0 else ":"))
            shown = rows[: self._shown(ctx)]
        else:
            text.add(f"No events {what}." if total == 0 else f"{total} {plural(total, 'event')} {what}:")
            shown = rows
        text.extend([event_line(e, self._tz) for e in shown])
        if total > len(shown):
            text.note(f"... and {total - len(shown)} more (ask with a narrower window or a higher limit).")
        return Answer(text.text(), tuple(ScoredEvent(e, 1.0) for e in rows), u.window, u.intent, total=total,
                      notes=u.notes, filters=u.filters, more=total - len(rows))

    async def _timeline(self, ctx: _Ctx) -> Answer:
        u, q = ctx.u, ctx.q
        cap = min(q.limit or self._max_list, self._max_list)
        filters = u.filters
        notes = list(u.notes)
        if not filters.trace_id:
            hits = await self._ranked(ctx, u.filters, limit=1)
            if not hits:
                return self._nothing(ctx, f"No reports match {_quote(u.text)} {self._describe(ctx)}, so there is "
                                          "no timeline to give.", "nothing above the relevance floor")
            top = (await self._store.get([hits[0].id]))[0]
            notes.append(f"trace={top.trace_id} from best match #{top.id}")
            filters = Filters(trace_id=(top.trace_id,))
        rows = await self._store.select(None, filters, limit=cap, order="asc")
        if not rows:
            return await self._no_trace(ctx, filters.trace_id)
        total = await self._store.count(None, filters)
        traces = ", ".join(filters.trace_id)
        span = f"{when(rows[0].occurred_at, self._tz)} to {when(rows[-1].occurred_at, self._tz)}"
        text = Budget()
        text.add(f"Timeline of trace {traces}: {total} {plural(total, 'event')}, {span}:")
        text.extend([event_line(e, self._tz) for e in rows])
        if total > len(rows):
            text.note(f"... and {total - len(rows)} more (ask with a higher limit).")
        return Answer(text.text(), tuple(ScoredEvent(e, 1.0) for e in rows), u.window, "timeline", total=total,
                      notes=tuple(notes), filters=filters, more=total - len(rows))

    async def _no_trace(self, ctx: _Ctx, traces: Sequence[str]) -> Answer:
        """"No reports carry trace X", with stored ids that look like it; never another trace's events."""
        near: list[str] = []
        for trace in traces:
            near += [t for t in await self._store.near_traces(trace, limit=_NEAR) if t not in near]
        text = f"No reports carry trace {', '.join(traces)}."
        if near:
            text += f" Stored trace ids that look like it: {', '.join(near[:_NEAR])}."
        return self._nothing(ctx, text, f"trace {', '.join(traces)} is not stored" +
                             (f"; near: {', '.join(near[:_NEAR])}" if near else ""))

    async def _why(self, ctx: _Ctx) -> Answer:
        u, q = ctx.u, ctx.q
        limit = q.limit or self._default_limit
        if u.named and not _stray(u):
            # "Why did we roll back billing-worker?": every event the names select matches equally.
            rows = await self._store.select(u.window, u.filters, limit=_WHY_CANDIDATES, order="desc")
            ids = [e.id for e in rows]
            if ctx.names:
                ids = await self._about(ctx, ids)
            hits = [Hit(i, 1.0) for i in ids]
        else:
            hits = await self._ranked(ctx, u.filters, limit=_WHY_CANDIDATES)
        if not hits:
            if u.filters.trace_id and not await self._store.count(None, Filters(trace_id=u.filters.trace_id)):
                return await self._no_trace(ctx, u.filters.trace_id)
            return self._nothing(ctx, f"No reports match {_quote(u.text)} {self._describe(ctx)}, so I cannot say "
                                      "why.", "nothing above the relevance floor")
        # Equal matches for the incident choice when the question names a kind of event ("why did X roll
        # back"); otherwise the best match is what it asks about.
        found = {e.id: e for e in await self._store.get([h.id for h in (hits if u.filters.event else hits[:1])])}
        ranked_events = [found[h.id] for h in hits if h.id in found]
        candidates = equal_matches(ranked_events, _stray(u)) if u.filters.event else ranked_events[:1]
        traces = {t: await self._store.select(None, Filters(trace_id=(t,)), limit=self._max_list)
                  for t in dict.fromkeys(c.trace_id for c in candidates)}  # each trace read once
        choice = choose_incident(candidates, traces)
        assert choice is not None
        top = choice.chosen
        score = {h.id: h.score for h in hits}
        mates = [e for e in traces[top.trace_id] if e.id != top.id]
        text = Budget()
        text.add(f"Best match: {event_line(top, self._tz)[2:]}")
        if len(candidates) > 1:
            text.add(f"(Chosen among {len(candidates)} matches: {choice.reason}.)")
        if mates:
            text.add(f"Reports on its trace {top.trace_id}, in time order:")
            text.extend([event_line(e, self._tz) for e in mates])
        else:
            text.add(f"No other report carries trace {top.trace_id}.")
        others = list(choice.others)
        if others:
            listed = ", ".join(f"#{e.id} ({when(e.occurred_at, self._tz)}, trace {e.trace_id})" for e in others[:5])
            extra = f" and {len(others) - 5} more" if len(others) > 5 else ""
            text.note(f"{len(others)} other {plural(len(others), 'match')} {self._describe(ctx)}: {listed}{extra}.")
        # Events: the chosen one, what explains it, the other matches best first, its other trace mates
        # nearest first.
        position = {e.id: i for i, e in enumerate(traces[top.trace_id])}
        here = position.get(top.id, 0)
        explaining = [e for e in mates if is_cause(e) or is_symptom(e)]
        rest = sorted((e for e in mates if e not in explaining), key=lambda e: abs(position[e.id] - here))
        taken = {top.id, *(e.id for e in explaining)}
        ranked = [h.id for h in hits if h.id not in taken]
        by_id = found | {e.id: e for e in await self._store.get([i for i in ranked[:limit] if i not in found])}
        ordered = [top, *explaining, *(by_id[i] for i in ranked[:limit] if i in by_id)]
        ordered += [e for e in rest if e.id not in {o.id for o in ordered}]
        events = tuple(ScoredEvent(e, score.get(e.id, 0.0)) for e in ordered[:limit])
        notes = (*u.notes, f"why: chose #{top.id} of {len(candidates)} equal {plural(len(candidates), 'match')}: "
                            f"{choice.reason}")
        return Answer(text.text(), events, u.window, "why", total=len(hits), notes=notes, filters=u.filters)

    async def _search(self, ctx: _Ctx) -> Answer:
        u, q = ctx.u, ctx.q
        limit = q.limit or self._default_limit
        shown = self._shown(ctx)
        filters = u.filters
        hits = await self._ranked(ctx, filters, limit=max(limit, shown, self._retriever.candidates))
        relaxed = ""
        if not hits and (u.filters.event or u.filters.service) and not (ctx.q.filters.event or ctx.q.filters.service):
            filters = replace(u.filters, event=ctx.q.filters.event, service=ctx.q.filters.service)
            relaxed = ", ".join(f"{k}={'/'.join(v)}" for k, v in
                                (("event", u.filters.event), ("service", u.filters.service)) if v)
            hits = await self._ranked(ctx, filters, limit=max(limit, shown, self._retriever.candidates))
        # Reports not embedded yet are found by their words (BM25) and filters only: say how many.
        waiting = await self._store.count_unembedded(u.window, filters)
        unembedded = (f"{waiting} {plural(waiting, 'report')} in this window not embedded yet: found by words only"
                      if waiting else "")
        if not hits:
            if u.filters.trace_id and not await self._store.count(None, Filters(trace_id=u.filters.trace_id)):
                return await self._no_trace(ctx, u.filters.trace_id)
            nothing = self._nothing(ctx, f"No reports match {_quote(u.text)} {self._describe(ctx)}."
                                    + (f"\n({unembedded}.)" if unembedded else ""),
                                    f"nothing above the relevance floor ({self._retriever.min_score:g})")
            return replace(nothing, notes=(*nothing.notes, unembedded)) if unembedded else nothing
        by_id = {e.id: e for e in await self._store.get([h.id for h in hits[: max(limit, shown)]])}
        scored = [ScoredEvent(by_id[h.id], h.score) for h in hits[: max(limit, shown)] if h.id in by_id]
        n_text = min(shown, len(scored))
        text = Budget()
        text.add(f"{'The best match' if n_text == 1 else f'The {n_text} best matches'} for {_quote(u.text)} "
                 f"{self._describe(ctx, filters)}:")
        text.extend([event_line(s.event, self._tz) for s in scored[:n_text]])
        if len(hits) > n_text:
            more = len(hits) - n_text
            text.note(f"{more} more {plural(more, 'report')} matched (ask with a higher limit to see them).")
        notes = u.notes
        if relaxed:
            text.note(f"(Nothing matched {relaxed}; searched without it.)")
            notes = (*notes, f"relaxed: nothing matched {relaxed}")
        if unembedded:
            text.note(f"({unembedded}.)")
            notes = (*notes, unembedded)
        return Answer(text.text(), tuple(scored[:limit]), u.window, u.intent, total=len(hits), notes=notes,
                      filters=filters, more=max(len(hits) - limit, 0))

    async def _ranked(self, ctx: _Ctx, filters: Filters, *, limit: int) -> list[Hit]:
        """Ranked hits at or above the relevance floor, best first."""
        u = ctx.u
        words = " ".join(u.residual) if u.named else None  # names turned into filters are not searched again
        hits = await self._retriever.search(u.text, u.window, filters, limit=limit, words=words)
        hits = [h for h in hits if h.score >= self._retriever.min_score]
        if ctx.names and hits:
            about = set(await self._about(ctx, [h.id for h in hits], ranked=True))
            hits = [h for h in hits if h.id in about]
        return hits

    async def _about(self, ctx: _Ctx, ids: list[int], *, ranked: bool = False) -> list[int]:
        """The ids of ``ids`` about every name of ``ctx.names`` (see memory_agent.query.grounding);
        ``ranked``: ``ids`` are best first and the best decides whether any is."""
        result = await self._grounding.keep(ctx.names, ids, ranked=ranked)
        if result.note and result.note not in ctx.judged:
            ctx.judged.append(result.note)
        if len(result.kept) < len(ids):
            ctx.dropped[0] += len(ids) - len(result.kept)
        return list(result.kept)

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

    def _nothing(self, ctx: _Ctx, text: str, note: str) -> Answer:
        u = ctx.u
        if ctx.names:
            label = ", ".join(repr(n) for n in ctx.names)
            also = (f", and none of the reports matching the rest of the question is about "
                    f"{'it' if len(ctx.names) == 1 else 'them'} in other words" if ctx.dropped[0] else "")
            text = f"No report mentions {label}{also}. {text}"
        return Answer(text=text, events=(), window=u.window, intent=u.intent, total=0, notes=(*u.notes, note),
                      filters=u.filters)


@dataclass(frozen=True, slots=True)
class _Ctx:
    u: Understanding
    q: Question
    now: float  # seconds since the epoch: the question's now (as_of or the clock)
    names: tuple[str, ...] = ()  # proper names no report holds as a word: events must be about them
    judged: list[str] = field(default_factory=list)  # notes of the grounding checks made
    dropped: list[int] = field(default_factory=lambda: [0])  # hits left out as not about the names


def _apply_structured(u: Understanding, q: Question) -> Understanding:
    """Structured ``since``/``until`` replace a time phrase; structured filters replace recognised ones.

    In ``mode="search"`` the intent is always ranked search and only the structured filters narrow: names
    in the text (handles, event types, services, trace ids) are searched as words.
    """
    window = u.window
    phrase = u.window_phrase
    if q.since is not None or q.until is not None:
        window = TimeWindow(since=q.since, until=q.until)
        phrase = None
    f = q.filters
    if q.mode == "search":
        notes = (*u.notes, "mode=search: ranked search; names in the text searched as words, not filters")
        return replace(u, intent="search", window=window, window_phrase=phrase, filters=f, notes=notes)
    filters = Filters(
        event=f.event or u.filters.event,
        service=f.service or u.filters.service,
        from_handle=f.from_handle or u.filters.from_handle,
        trace_id=f.trace_id or u.filters.trace_id,
    )
    return replace(u, window=window, window_phrase=phrase, filters=filters)


def _stray(u: Understanding) -> list[str]:
    """The question's words that neither name a filter nor only ask "what happened"."""
    return [w for w in u.residual if w not in _GENERIC]


def _asks_for_list(u: Understanding) -> bool:
    """With filters named, is the question still a list (at most LIST_STRAY_WORDS words name nothing)?"""
    return len(_stray(u)) <= LIST_STRAY_WORDS


def _is_generic(text: str) -> bool:
    words = [w for w in tokenize(text) if w not in STOPWORDS and w not in _GENERIC]
    return not words


def _phrase_compound(name: str) -> bool:
    """A compound whose parts include a stop word ("out-of-date", "end-to-end") is a phrase of the
    language, not a name."""
    return any(w in STOPWORDS for w in tokenize(name))


def _quote(text: str) -> str:
    return json.dumps(clip(text, 120), ensure_ascii=False)

