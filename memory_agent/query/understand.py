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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache

from memory_agent.query.text import clip, split_name, stem, tokenize_spans, word_set
from memory_agent.query.timewindow import WindowMatch, scan_window
from memory_agent.types import Filters, Intent, TimeWindow, Understanding, Vocabulary

__all__ = ["understand"]


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

_TRACE_AFTER_WORD = re.compile(
    r"\btrace(?:[\s_-]{0,3}id)?s?(?:\s{0,3}[:#=]\s{0,3}|\s{1,3})(?P<id>[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})", _F
)
_UUID = re.compile(
    r"(?<![0-9a-f-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f-])", _F
)
_BARE_TRACE = re.compile(r"(?<![\w-])(?:t|tr|trace)[-_][0-9]{1,18}(?![\w-])", _F)

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


# --- vocabulary indexes (cached per vocabulary) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EventIndex:
    single: dict[str, tuple[str, ...]]  # one stem (or compound key) → events
    by_part: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]  # part stem → (event, part stems)


@dataclass(frozen=True, slots=True)
class _NameIndex:
    by_first: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]  # first token → (name, tokens)
    joined: dict[str, tuple[str, ...]]  # all tokens written together → names


def _add(d: dict[str, list[str]], key: str, value: str) -> None:
    if key and value not in d.setdefault(key, []):
        d[key].append(value)


@lru_cache(maxsize=16)
def _event_index(events: frozenset[str]) -> _EventIndex:
    single: dict[str, list[str]] = {}
    by_part: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for event in sorted(events):
        parts = split_name(event)
        if not parts:
            continue
        stems = tuple(stem(p) for p in parts)
        _add(single, "".join(stems), event)
        _add(single, stem("".join(parts)), event)
        if len(parts) > 1:
            for s in set(stems):
                by_part.setdefault(s, []).append((event, stems))
    return _EventIndex({k: tuple(v) for k, v in single.items()}, {k: tuple(v) for k, v in by_part.items()})


@lru_cache(maxsize=32)
def _name_index(names: frozenset[str]) -> _NameIndex:
    by_first: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    joined: dict[str, list[str]] = {}
    for name in sorted(names):
        parts = split_name(name)
        if not parts:
            continue
        by_first.setdefault(parts[0], []).append((name, parts))
        if len(parts) > 1:
            _add(joined, "".join(parts), name)
    return _NameIndex({k: tuple(v) for k, v in by_first.items()}, {k: tuple(v) for k, v in joined.items()})


def _find_names(toks: list[_Tok], index: _NameIndex, kind: str, claimed: set[int]) -> list[_Occ]:
    """Occurrences of stored names (services, handles) as consecutive tokens or written together."""
    found: list[_Occ] = []
    for i, t in enumerate(toks):
        if i in claimed:
            continue
        for name, parts in index.by_first.get(t.text, ()):
            j = i + len(parts)
            if j > len(toks) or any(k in claimed for k in range(i, j)):
                continue
            if all(toks[i + n].text == p and (n == 0 or toks[i + n].join_prev) for n, p in enumerate(parts)):
                found.append(_Occ(kind, (name,), i, j, tuple(range(i, j))))
        for name in index.joined.get(t.text, ()):
            found.append(_Occ(kind, (name,), i, i + 1, (i,)))
    return found


def _find_events(toks: list[_Tok], index: _EventIndex, claimed: set[int]) -> list[_Occ]:
    """Event-type occurrences: one stem, 2-3 adjacent tokens compounded, or all parts within a span."""
    found: list[_Occ] = []
    n_toks = len(toks)
    for i, t in enumerate(toks):
        if i in claimed:
            continue
        events = index.single.get(t.stem)
        if events:
            found.append(_Occ("event", events, i, i + 1, (i,)))
        raw, stems = t.text, t.stem
        for k in range(i + 1, min(i + 3, n_toks)):
            if k in claimed or not toks[k].join_prev:
                break
            raw += toks[k].text
            stems += toks[k].stem
            compound = index.single.get(stems) or index.single.get(stem(raw))
            if compound:
                found.append(_Occ("event", compound, i, k + 1, tuple(range(i, k + 1))))
        for event, part_stems in index.by_part.get(t.stem, ()):
            needed = list(part_stems)
            needed.remove(t.stem)
            used = [i]
            limit = min(n_toks, i + len(part_stems) + _MULTI_SLACK)
            for k in range(i + 1, limit):
                if not needed or toks[k].break_before:
                    break
                if k not in claimed and toks[k].stem in needed:
                    needed.remove(toks[k].stem)
                    used.append(k)
            if not needed:
                found.append(_Occ("event", (event,), i, used[-1] + 1, tuple(used)))
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


_MAX_TRACE_SPANS = 32  # a question naming more trace ids than this is not about traces: stop looking


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    """Is ``pos`` inside one of ``spans`` (at most a few dozen, see _MAX_TRACE_SPANS)?"""
    return any(a <= pos < b for a, b in spans)


def _find_traces(
    question: str, wm: WindowMatch | None, notes: list[str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """Trace ids written in the question, in order, and their spans (sorted)."""
    found: list[tuple[int, int, str, int]] = []
    for pattern in (_TRACE_AFTER_WORD, _UUID, _BARE_TRACE):
        count = 0
        for m in pattern.finditer(question):
            span = m.span("id") if "id" in pattern.groupindex else m.span()
            value = question[span[0] : span[1]].rstrip(".:-_")
            if pattern is _UUID:
                value = value.lower()
            if not any(c.isdigit() for c in value):
                continue
            if wm is not None and span[0] < wm.end and span[1] > wm.start:
                continue
            found.append((span[0], span[0] + len(value), value, m.start()))
            count += 1
            if count >= _MAX_TRACE_SPANS:
                break
    found.sort()
    traces: list[str] = []
    spans: list[tuple[int, int]] = []
    for begin, stop, value, cue_start in found:
        if spans and begin < spans[-1][1]:
            continue  # inside an id already taken ("trace t-81" and bare "t-81")
        spans.append((begin, stop))
        if value not in traces:
            traces.append(value)
            notes.append(f"trace={_note(value)} from {_note(question[cue_start:stop])!r}")
    return traces, spans


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


def understand(question: str, *, now: datetime, tz: tzinfo, vocabulary: Vocabulary) -> Understanding:
    """Read a plain-language question (rules, no LLM; see the module docstring).

    ``now``: aware datetime the question is asked at; ``tz``: zone for days and weeks (e.g.
    ``ZoneInfo("UTC")``); ``vocabulary``: event types, services and handles already stored. Returns the
    intent, the window (``None`` if no time phrase), exact-match filters holding stored values only
    (plus trace ids as written), ``text`` (the question without the time phrase, whitespace tidied), the
    time phrase, and ``notes`` explaining every decision. Never raises on any question string.
    """
    notes: list[str] = []
    scan = scan_window(question, now=now, tz=tz)
    wm: WindowMatch | None = scan.match
    for bad in scan.rejected:
        notes.append(f"ignored {_note(bad)!r}: no such date")
    if wm is not None:
        notes.append(f"window={_note(wm.phrase)!r} {_fmt_window(wm.window, tz)}")
        text = _tidy(question[: wm.start] + " " + question[wm.end :])
    else:
        text = _tidy(question)

    intent, cue = _classify(question)
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

    traces, trace_spans = _find_traces(question, wm, notes)
    claimed.update(k for k, t in enumerate(toks) if _inside(t.start, trace_spans))

    # handles first: a handle in a reporting role, or written as one, claims its tokens
    handle_vals: list[str] = []
    handle_idx = _name_index(vocabulary.handles)
    event_names = vocabulary.events
    for occ in _pick(_find_names(toks, handle_idx, "handle", claimed), set()):
        occ, explicit = _extend_handle(toks, occ)
        if any(k in claimed for k in occ.used):
            continue
        name = occ.names[0]
        role = _reporter_role(toks, occ, explicit)
        if not (explicit or role):
            continue  # plain word: left for event types / services; noted below if nothing takes it
        claimed.update(occ.used)
        cue_word = _mention_cue(toks, occ.i, soft=True)
        clash = [e for e in event_names if split_name(e) == split_name(name)]
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
    occs = _find_events(toks, _event_index(vocabulary.events), claimed)
    occs += _find_names(toks, _name_index(vocabulary.services), "service", claimed)
    event_vals: list[str] = []
    service_vals: list[str] = []
    taken = set(claimed)
    for occ in _pick(occs, taken):
        if occ.kind == "event":
            cue_word = _mention_cue(toks, occ.i, soft=True)
            label = "/".join(occ.names)
            if intent == "timeline" and traces:
                notes.append(f"event {label} ({phrase(occ)!r}) not a filter: timeline of a trace")
            elif cue_word is not None:
                notes.append(f"event {label} ({phrase(occ)!r}) not a filter: mentioned after {cue_word!r}")
            else:
                event_vals.extend(e for e in occ.names if e not in event_vals)
                notes.append(f"event={label} from {phrase(occ)!r}")
            handle_clash = [h for h in vocabulary.handles if split_name(h) == split_name(occ.names[0])]
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
    for occ in _find_names(toks, handle_idx, "handle", taken):
        notes.append(f"handle {occ.names[0]} ({phrase(occ)!r}) not a filter: mentioned, not as reporter")

    filters = Filters(
        event=tuple(event_vals),
        service=tuple(service_vals),
        from_handle=tuple(handle_vals),
        trace_id=tuple(traces),
    )
    return Understanding(
        intent=intent,
        window=wm.window if wm is not None else None,
        filters=filters,
        text=text,
        window_phrase=wm.phrase if wm is not None else None,
        notes=tuple(list(dict.fromkeys(notes))[:_MAX_NOTES]),
    )
