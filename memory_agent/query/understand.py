"""Plain-language questions → ``Understanding`` (intent, window, filters, search text), by rules.

How a question is read, in order:

1. **Window**: the time phrase (``timewindow.scan_window``); ``text`` is the question without it.
2. **Intent** from cue phrases: ``count`` ("how many", "number of", "count"), ``timeline`` ("timeline of",
   "history of", "sequence of events", "what happened in/with trace ..."), ``why`` ("why", "what caused",
   "root cause of", "reason for"), ``list`` ("what X happened", "which X", "list", "show", "any X",
   "were there any X"), else ``search``. The earliest cue wins; a question that opens with a display verb
   ("list", "show", "give me") is ``list`` unless it asks for a count or a timeline.
3. **Names** recognised against the ``Vocabulary`` of stored values, each decision recorded in ``notes``:

   * trace ids ("trace t-81", "trace_id: abc-1", a bare ``t-81``, any UUID) always narrow;
   * handles narrow only when the question is about what the handle reported: "@monitor" / "the deploy
     agent" / "reported by monitor" / "from test-runner" / "what did monitor report|say" / "monitor's
     anomalies"; a handle merely mentioned ("after alice's deploy") is noted, not a filter;
   * event types are matched as people speak of them: Porter stems ("rollbacks", "deployments"),
     adjacent tokens compounded ("rolled back" → ``rollback``), multi-word types matched in any order
     within a short span ("tests were quarantined" → ``test_quarantined``). They narrow unless the
     question only mentions them as a reference point ("after the deploy", "what did monitor say about
     the deploy"), and in a timeline only when no trace id is given;
   * services ("api-gateway", spoken "api gateway") narrow unless only a reference point ("after
     api-gateway's deploy").

   A token claimed by one reading is not read again: a handle in a reporting role or written as a handle
   ("@deploy", "deploy agent") wins over an event type of the same name; otherwise the event wins.

Everything is linear in the question's length; nothing raises on any question string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from itertools import combinations

from memory_agent.query.text import STOPWORDS, clip, stem, tokenize_spans, word_set
from memory_agent.query.timewindow import WindowMatch, scan_window
from memory_agent.query.traces import find_traces, inside, merge_traces, trace_candidates
from memory_agent.query.vocabulary import MAX_ORDER_FREE_PARTS, EventNames, Names, VocabularyIndex
from memory_agent.types import Filters, Intent, TimeWindow, Understanding, Vocabulary

__all__ = ["trace_candidates", "understand"]


_F = re.IGNORECASE

# --- intent cues ------------------------------------------------------------------------------------

_COUNT_CUES = re.compile(
    r"\bhow\s+(?:many|often)\b|\bnumber\s+of\b|\bcount\s+(?:of|the|all)\b|^\W*count\b|\btotal\s+(?:number|count)\b",
    _F,
)
_TIMELINE_CUES = re.compile(
    r"\btime\s?line\b|\bchronolog\w*|\bsequence\s+of\s+events\b|\border\s+of\s+events\b"
    r"|\bhistory\s+(?:of|for)\b|\b(?:walk|take)\s+me\s+through\b"
    r"|\bwhat\s+(?:happened|went\s+on)\s+(?:in|with|to|during|for|on)\s+(?:the\s+)?(?:trace|incident)\b",
    _F,
)
_WHY_CUES = re.compile(
    r"^\W*why\b|\bwhy\s+(?:did|does|do|was|were|is|are|has|have|had|would)\b"
    r"|\bwhat\s+(?:caused|causes|cause[sd]?|led\s+to|triggered|made)\b|\b(?:root\s+)?causes?\s+of\b"
    r"|\breasons?\s+(?:for|behind|why)\b|\bhow\s+come\b|\bexplain\b",
    _F,
)
_LIST_CUES = re.compile(
    r"\bwhat(?:\s+[\w@'-]+){0,4}?\s+(?:happen(?:ed|s)?|occur(?:red|s)?|went\s+wrong|failed|report(?:ed|s)?"
    r"|were\s+there|was\s+there|have\s+there)\b"
    r"|^\W*which\b|\bwhich\s+(?!is\b|was\b)[\w@-]+\s+(?:\w+\s+)?(?:happen|occur|fail|were|was|did|had|have)"
    r"|^\W*any\b|\b(?:were|was|are|is|have|has|had)\s+there\s+(?:been\s+)?any\b|^\W*(?:did|have|has)\s+any\b",
    _F,
)
_DISPLAY_OPENING = re.compile(r"^\W*(?:please\s+)?(?:list|show|display|give|get|find|fetch|enumerate)\b", _F)
# Words a chosen intent cue uses up, so they are not read as names ("count", "cause", "report", ...).
_INTENT_WORDS = word_set(
    "how many often number count total timeline time line chronology chronological sequence "
    "order history walk take why what caused causes cause led triggered made root reason "
    "reasons behind explain come happened happen happens occurred occur occurs went wrong "
    "failed reported report reports list show display give get find fetch enumerate which any "
    "were was there"
)

# --- names ----------------------------------------------------------------------------------------------

_MAX_UNKNOWN = 8

_REPORT_VERBS = word_set(
    "report reported reports reporting say says said saying flag flagged flags log logged logs "
    "send sent sends see saw seen sees detect detected detects notice noticed raise raised "
    "find found post posted emit emitted record recorded observe observed do did does done "
    "announce announced mention mentioned warn warned alert alerted think thinks thought tell "
    "told publish published notify notified write wrote complain complained"
)
_REPORT_NOUNS = word_set("report reports alert alerts message messages findings output logs updates notes")
_SPEECH_VERBS = word_set(
    "say says said saying mention mentioned report reported reports note noted think thought "
    "write wrote log logged complain complained warn warned"
)
_AGENT_WORDS = frozenset({"agent", "bot"})
_REPORTER_PREPS = frozenset({"by", "from"})
_CAUSAL = frozenset({"caus", "trigger", "introduc", "broken", "broke", "led"})  # stems
# A name after one of these is a reference point, not the subject ("rollbacks after the deploy").
_HARD_MENTION = word_set(
    "after before following since until till than despite besides except unlike without during amid preceding"
)
# ... and after these only when someone is said to have spoken ("what did monitor say about the deploy").
_SOFT_MENTION = frozenset({"about", "regarding", "concerning"})
_CLAUSE_STOP = word_set("and or but which that who what why when where how while whereas")
_LOOKBACK = 8
_MAX_NOTES = 40
_NOTE_CHARS = 60
_MULTI_SLACK = 2  # extra tokens allowed inside an order-free multi-word event type


@dataclass(frozen=True, slots=True)
class _Tok:
    text: str  # lower case
    stem: str
    start: int
    end: int
    at: bool  # written "@name"
    possessive: bool  # followed by "'s"
    join_prev: bool  # separated from the previous token only by "-", "_", "." or a short run of spaces
    break_before: bool  # punctuation between the previous token and this one ends a clause


@dataclass(frozen=True, slots=True)
class _Occ:
    """One occurrence of a stored name: token indices ``[i, j)`` and the tokens it uses."""

    kind: str  # "event" | "service" | "handle"
    names: tuple[str, ...]
    i: int
    j: int
    used: tuple[int, ...]


def _tokens(question: str, skip: tuple[int, int] | None) -> list[_Tok]:
    raw = tokenize_spans(question)
    out: list[_Tok] = []
    prev_end: int | None = None
    for k, t in enumerate(raw):
        if skip is not None and t.start < skip[1] and t.end > skip[0]:
            continue
        gap = question[prev_end : t.start] if prev_end is not None else ""
        if t.text in ("s", "t") and gap in ("'", "\u2019") and out:
            if t.text == "s":
                last = out[-1]
                out[-1] = _Tok(last.text, last.stem, last.start, last.end, last.at, True, last.join_prev,
                               last.break_before)  # fmt: skip
            prev_end = t.end
            continue
        at = question[t.start - 1 : t.start] == "@"
        gap_core = gap[:-1] if at else gap
        join_prev = prev_end is not None and (
            gap_core in ("-", "_", ".") or (gap_core.isspace() and len(gap_core) <= 3)
        )
        brk = any(c in ',;?!()[]{}"' for c in gap) or (
            any(c in ".:" for c in gap) and any(c.isspace() for c in gap)
        )
        out.append(_Tok(t.text, stem(t.text), t.start, t.end, at, False, join_prev, brk or k == 0))
        prev_end = t.end
    return out


# --- names in the question (lookups in the vocabulary index; see memory_agent.query.vocabulary) -----------


def _find_names(toks: list[_Tok], index: Names, kind: str, claimed: set[int]) -> list[_Occ]:
    """Occurrences of stored names (services, handles) as consecutive tokens or written together.

    One dict lookup per (start token, length up to the longest indexed name): independent of how many
    names are stored.
    """
    found: list[_Occ] = []
    n_toks = len(toks)
    for i in range(n_toks):
        if i in claimed:
            continue
        key: tuple[str, ...] = ()
        for j in range(i, min(n_toks, i + index.max_tokens)):
            if j in claimed or (j > i and not toks[j].join_prev):
                break
            key += (toks[j].text,)
            for name in index.by_tokens.get(key, ()):
                found.append(_Occ(kind, (name,), i, j + 1, tuple(range(i, j + 1))))
        for name in index.joined.get(toks[i].text, ()):
            found.append(_Occ(kind, (name,), i, i + 1, (i,)))
    return found


def _find_events(toks: list[_Tok], index: EventNames, claimed: set[int]) -> list[_Occ]:
    """Event-type occurrences: one stem, 2-3 adjacent tokens compounded, the parts in sequence, or all
    parts (up to MAX_ORDER_FREE_PARTS) in any order within a short span. Dict lookups only."""
    found: list[_Occ] = []
    n_toks = len(toks)
    for i, t in enumerate(toks):
        if i in claimed:
            continue
        events = index.single.get(t.stem)
        if events:
            found.append(_Occ("event", tuple(events), i, i + 1, (i,)))
        raw, stems = t.text, t.stem
        for k in range(i + 1, min(i + 3, n_toks)):
            if k in claimed or not toks[k].join_prev:
                break
            raw += toks[k].text
            stems += toks[k].stem
            compound = index.single.get(stems) or index.single.get(stem(raw))
            if compound:
                found.append(_Occ("event", tuple(compound), i, k + 1, tuple(range(i, k + 1))))
        sequence: tuple[str, ...] = (t.stem,)
        for k in range(i + 1, min(n_toks, i + index.max_tokens)):
            if k in claimed or not toks[k].join_prev:
                break
            sequence += (toks[k].stem,)
            for event in index.by_sequence.get(sequence, ()):
                found.append(_Occ("event", (event,), i, k + 1, tuple(range(i, k + 1))))
        if not index.by_parts:
            continue
        seen: set[str] = set()
        for size in range(2, MAX_ORDER_FREE_PARTS + 1):
            window: list[int] = []
            for k in range(i + 1, min(n_toks, i + size + _MULTI_SLACK)):
                if toks[k].break_before:
                    break
                if k not in claimed:
                    window.append(k)
            for chosen in combinations(window, size - 1):
                key = tuple(sorted((t.stem, *(toks[k].stem for k in chosen))))
                for event in index.by_parts.get(key, ()):
                    if event not in seen:  # the earliest tokens that complete it, as people write it
                        seen.add(event)
                        used = (i, *chosen)
                        found.append(_Occ("event", (event,), i, used[-1] + 1, used))
    return found


def _pick(occs: Iterable[_Occ], claimed: set[int]) -> list[_Occ]:
    """Greedy: most tokens first, then leftmost; an occurrence whose tokens are taken is dropped."""
    chosen: list[_Occ] = []
    for occ in sorted(occs, key=lambda o: (-len(o.used), o.i, o.kind != "event")):
        if any(k in claimed for k in occ.used):
            continue
        claimed.update(occ.used)
        chosen.append(occ)
    return sorted(chosen, key=lambda o: o.i)


# --- roles ----------------------------------------------------------------------------------------------


def _mention_cue(toks: list[_Tok], i: int, *, soft: bool) -> str | None:
    """The word that makes the name at token ``i`` a mere reference point, if any (bounded look-back)."""
    k = i
    while k > 0 and i - k < _LOOKBACK:
        if toks[k].break_before:
            return None
        k -= 1
        w = toks[k].text
        if w in _CLAUSE_STOP:
            return None
        if w in _HARD_MENTION:
            return w
        if w == "by" and k > 0 and toks[k - 1].stem in _CAUSAL:
            return f"{toks[k - 1].text} by"
        if (
            soft
            and w in _SOFT_MENTION
            and any(toks[b].text in _SPEECH_VERBS for b in range(max(0, k - _LOOKBACK), k))
        ):
            return w
    return None


def _extend_handle(toks: list[_Tok], occ: _Occ) -> tuple[_Occ, bool]:
    """Widen a handle occurrence over "agent"/"bot" ("the deploy agent"); say whether it is explicit."""
    i, j = occ.i, occ.j
    explicit = toks[i].at
    if j < len(toks) and toks[j].text in _AGENT_WORDS and toks[j].join_prev:
        j += 1
        explicit = True
    return _Occ(occ.kind, occ.names, i, j, tuple(range(i, j))), explicit


def _reporter_role(toks: list[_Tok], occ: _Occ, explicit: bool) -> str | None:
    """Why the handle at ``occ`` is the reporter ("by", "from", "report", "'s"), or None."""
    i, j = occ.i, occ.j
    before = i - 1
    if before >= 0 and toks[before].text == "the":
        before -= 1
    if (
        before >= 0
        and toks[before].text in _REPORTER_PREPS
        and not (toks[before].text == "by" and before > 0 and toks[before - 1].stem in _CAUSAL)
    ):
        return toks[before].text
    if toks[j - 1].possessive:
        return "'s"
    if j < len(toks) and not toks[j].break_before:
        nxt = toks[j].text
        if nxt in _REPORT_VERBS:
            return nxt
        if explicit and (nxt in _REPORT_NOUNS or nxt == "events"):
            return nxt
    return None


# --- the public function ----------------------------------------------------------------------------------


def _classify(question: str) -> tuple[Intent, tuple[int, int] | None]:
    """Intent and the span of the cue that decided it (None for search)."""
    found: list[tuple[int, int, Intent, tuple[int, int]]] = []
    cues: tuple[tuple[Intent, re.Pattern[str]], ...] = (
        ("count", _COUNT_CUES),
        ("timeline", _TIMELINE_CUES),
        ("why", _WHY_CUES),
        ("list", _LIST_CUES),
    )
    for rank, (intent, pattern) in enumerate(cues):
        m = pattern.search(question)
        if m:
            found.append((m.start(), rank, intent, m.span()))
    display = _DISPLAY_OPENING.search(question)
    if display:
        strong = [f for f in found if f[2] in ("count", "timeline")]
        if strong:
            best = min(strong)
            return best[2], best[3]
        return "list", display.span()
    if found:
        best = min(found)
        return best[2], best[3]
    return "search", None


def _unknown_names(question: str, toks: list[_Tok], taken: set[int]) -> list[str]:
    """Words written as names that no stored name claimed: compounds joined by ``-`` or ``_``
    (``geo-router``), ``@handles``, and the word before "agent"/"bot" ("the backup agent")."""
    out: list[str] = []
    i = 0
    while i < len(toks) and len(out) < _MAX_UNKNOWN:
        j = i + 1
        while j < len(toks) and question[toks[j - 1].end : toks[j].start] in ("-", "_"):
            j += 1
        run = range(i, j)
        after = toks[j].text if j < len(toks) else ""
        named = j - i > 1 or toks[i].at or (after in _AGENT_WORDS and toks[i].text not in STOPWORDS)
        if named and not any(k in taken for k in run) and any(c.isalpha() for c in toks[i].text):
            value = question[toks[i].start : toks[j - 1].end]
            if value not in out:
                out.append(value)
        i = j
    return out


# Capitalised words that are not names of things reported: days, months, zones, titles, "I".
_NOT_PROPER = word_set(
    "monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun "
    "january february march april may june july august september october november december jan feb mar apr "
    "jun jul aug sep sept oct nov dec utc gmt cet cest est edt pst pdt am pm i ok "
    "dr mr mrs ms mx prof jr sr"  # titles: the name is the word after them
)
_TITLES = word_set("dr mr mrs ms mx prof jr sr st")  # "Dr. Seuss": the dot ends no sentence
_SENTENCE_ENDS = frozenset(".?!:;")


def proper_names(question: str, toks: list[_Tok], taken: set[int]) -> list[str]:
    """Words written as proper names that no stored name, trace id or intent cue took: an inner capital
    (``GraphQL``, ``iOS``, ``LDAP``) or a capital first letter not at the start of a sentence
    (``Kafka``, ``Frankfurt``; a title's dot ends no sentence: "Dr. Seuss"); consecutive ones form one
    name ("App Store"). Days, months, zones and titles are not names. A question written in title case (two
    or more capitalised stop words inside a sentence) or in capitals gives no such signal: returns none.
    These are names a report would hold if it were about them (checked against stored text by the
    answerer: :mod:`memory_agent.query.grounding`).
    """
    words = [question[t.start : t.end] for t in toks]
    # A sentence starts at the first token and after ".", "?", "!", ":" or ";" (not after a title's dot);
    # only the gap before each token is read, so this stays linear in the question's length.
    starts: list[bool] = []
    for k, t in enumerate(toks):
        before = question[toks[k - 1].end if k else 0 : t.start].rstrip()
        title = k > 0 and toks[k - 1].text in _TITLES
        starts.append((k == 0 and not before) or (before[-1:] in _SENTENCE_ENDS and not title))
    title_case = sum(1 for t, w, first in zip(toks, words, starts, strict=True)
                     if w[:1].isupper() and t.text in STOPWORDS and not first)
    if not words or title_case >= 2 or not any(c.islower() for c in question):
        return []
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run and len(out) < _MAX_UNKNOWN:
            value = question[toks[run[0]].start : toks[run[-1]].end]
            if value not in out:
                out.append(value)
        run.clear()

    for k, (t, w) in enumerate(zip(toks, words, strict=True)):
        inner = any(c.isupper() for c in w[1:])
        first = w[:1].isupper() and not starts[k]
        name = (inner or first) and sum(c.isalpha() for c in w) >= 2
        if name and k not in taken and not t.at and t.text not in STOPWORDS and t.text not in _NOT_PROPER:
            if run and not (question[toks[run[-1]].end : t.start].isspace()):
                flush()
            run.append(k)
        else:
            flush()
    flush()
    return out


def _note(text: str) -> str:
    """A piece of the question quoted in a note."""
    return clip(text, _NOTE_CHARS)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    return re.sub(r" ([?.!,;:])", r"\1", text).strip()


def _fmt_window(window: TimeWindow, tz: tzinfo) -> str:
    def one(t: float | None, open_word: str) -> str:
        if t is None:
            return open_word
        try:
            return datetime.fromtimestamp(t, tz).isoformat(timespec="minutes")
        except (ValueError, OverflowError, OSError):
            return repr(t)

    return f"[{one(window.since, '-inf')}, {one(window.until, 'open')})"


def understand(
    question: str,
    *,
    now: datetime,
    tz: tzinfo,
    vocabulary: Vocabulary | VocabularyIndex,
    traces: Mapping[str, str] | None = None,
) -> Understanding:
    """Read a plain-language question (rules, no LLM; see the module docstring).

    ``now``: aware datetime the question is asked at; ``tz``: zone for days and weeks (e.g.
    ``ZoneInfo("UTC")``); ``vocabulary``: event types, services and handles already stored (an index, or
    a plain :class:`~memory_agent.types.Vocabulary`, indexed here); ``traces``: which of
    :func:`trace_candidates` are stored trace ids (candidate -> stored id), as the store's indexed
    lookup found them. Returns the intent, the window (``None`` if no time phrase), exact-match filters
    holding stored values only (plus trace ids as written), ``text`` (the question without the time
    phrase, whitespace tidied), the time phrase, and ``notes`` explaining every decision. Never raises on
    any question string.
    """
    index = vocabulary if isinstance(vocabulary, VocabularyIndex) else VocabularyIndex.build(vocabulary)
    notes: list[str] = []
    intent, cue = _classify(question)
    stored, written = find_traces(question, traces or {}, index, intent, notes)
    # A stored trace id is not read as a time ("rel-2026-11-20-3"): the window is found outside them.
    masked = question
    for t in stored:
        masked = masked[: t.start] + " " * (t.end - t.start) + masked[t.end :]
    scan = scan_window(masked, now=now, tz=tz)
    wm: WindowMatch | None = scan.match
    for bad in scan.rejected:
        notes.append(f"ignored {_note(bad)!r}: no such date")
    if wm is not None:
        notes.append(f"window={_note(wm.phrase)!r} {_fmt_window(wm.window, tz)}")
        text = _tidy(question[: wm.start] + " " + question[wm.end :])
    else:
        text = _tidy(question)
    notes.append(
        f"intent={intent}" + (f" from {_note(question[cue[0] : cue[1]])!r}" if cue else " (no cue)")
    )

    toks = _tokens(question, (wm.start, wm.end) if wm is not None else None)
    claimed: set[int] = set()
    if cue is not None:
        claimed.update(
            k for k, t in enumerate(toks) if cue[0] <= t.start < cue[1] and t.text in _INTENT_WORDS
        )

    def phrase(occ: _Occ) -> str:
        return _note(question[toks[occ.i].start - (1 if toks[occ.i].at else 0) : toks[occ.j - 1].end])

    trace_vals, trace_spans = merge_traces(question, stored, written, wm, notes)
    claimed.update(k for k, t in enumerate(toks) if inside(t.start, trace_spans))

    # handles first: a handle in a reporting role, or written as one, claims its tokens
    handle_vals: list[str] = []
    for occ in _pick(_find_names(toks, index.handles, "handle", claimed), set()):
        occ, explicit = _extend_handle(toks, occ)
        if any(k in claimed for k in occ.used):
            continue
        name = occ.names[0]
        role = _reporter_role(toks, occ, explicit)
        if not (explicit or role):
            continue  # plain word: left for event types / services; noted below if nothing takes it
        claimed.update(occ.used)
        cue_word = _mention_cue(toks, occ.i, soft=True)
        clash = index.events.same_tokens(name)
        if clash:
            notes.append(f"{phrase(occ)!r} read as handle {name}, not event {clash[0]}")
        if role and cue_word is None:
            if name not in handle_vals:
                handle_vals.append(name)
            notes.append(f"handle={name} from {phrase(occ)!r} ({role})")
        else:
            why = f"mentioned after {cue_word!r}" if cue_word else "mentioned, not as reporter"
            notes.append(f"handle {name} ({phrase(occ)!r}) not a filter: {why}")

    # event types and services compete for the remaining tokens
    occs = _find_events(toks, index.events, claimed)
    occs += _find_names(toks, index.services, "service", claimed)
    event_vals: list[str] = []
    service_vals: list[str] = []
    taken = set(claimed)
    for occ in _pick(occs, taken):
        if occ.kind == "event":
            cue_word = _mention_cue(toks, occ.i, soft=True)
            label = "/".join(occ.names)
            if intent == "timeline" and trace_vals:
                notes.append(f"event {label} ({phrase(occ)!r}) not a filter: timeline of a trace")
            elif cue_word is not None:
                notes.append(f"event {label} ({phrase(occ)!r}) not a filter: mentioned after {cue_word!r}")
            else:
                event_vals.extend(e for e in occ.names if e not in event_vals)
                notes.append(f"event={label} from {phrase(occ)!r}")
            handle_clash = index.handles.same_tokens(occ.names[0])
            if handle_clash:
                notes.append(f"{phrase(occ)!r} read as event, not handle {handle_clash[0]}")
        else:
            name = occ.names[0]
            cue_word = _mention_cue(toks, occ.i, soft=False)
            if cue_word is not None:
                notes.append(f"service {name} ({phrase(occ)!r}) not a filter: mentioned after {cue_word!r}")
            else:
                if name not in service_vals:
                    service_vals.append(name)
                notes.append(f"service={name} from {phrase(occ)!r}")

    # plain handle words that nothing else took
    for occ in _find_names(toks, index.handles, "handle", taken):
        taken.update(occ.used)
        notes.append(f"handle {occ.names[0]} ({phrase(occ)!r}) not a filter: mentioned, not as reporter")

    unknown = _unknown_names(question, toks, taken)
    for name in unknown:
        notes.append(f"{_note(name)!r} is written as a name but no event type, service or handle is called so")

    filters = Filters(
        event=tuple(event_vals),
        service=tuple(service_vals),
        from_handle=tuple(handle_vals),
        trace_id=tuple(trace_vals),
    )
    return Understanding(
        intent=intent,
        window=wm.window if wm is not None else None,
        filters=filters,
        text=text,
        window_phrase=wm.phrase if wm is not None else None,
        notes=tuple(list(dict.fromkeys(notes))[:_MAX_NOTES]),
        unknown_names=tuple(unknown),
        proper_names=tuple(n for n in proper_names(question, toks, taken) if n not in unknown),
        residual=tuple(t.text for k, t in enumerate(toks) if k not in taken and t.text not in STOPWORDS),
    )
