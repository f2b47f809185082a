"""Trace ids in a question, of any shape: the candidates to look up, and which of them the question asks for.

A trace id is recognised in two ways (both linear in the question's length):

* **stored**: a token of the question equal to a stored trace id (:func:`trace_candidates` lists the
  tokens worth looking up; the store answers with one index seek each, whatever the number of traces);
* **written**: an id asked for by the way it is written, stored or not: after the word "trace", a UUID,
  ``t-81``, a prefixed id such as ``req_7b1e0c`` or ``INC-2041``, and the object of a timeline ("timeline
  of a1b2c3d4"). Versions, times, dates and numbers with units are not ids unless stored, nor is a token
  that is a stored event type, service or handle.

:func:`memory_agent.query.understand.understand` merges both (stored first) outside the time phrase.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from memory_agent.query.text import clip
from memory_agent.query.timewindow import WindowMatch
from memory_agent.query.vocabulary import VocabularyIndex
from memory_agent.types import Intent

__all__ = ["TraceSpan", "find_traces", "inside", "merge_traces", "trace_candidates"]

_F = re.IGNORECASE
_NOTE_CHARS = 60

_TRACE_AFTER_WORD = re.compile(
    r"\btrace(?:[\s_-]{0,3}id)?s?(?:\s{0,3}[:#=]\s{0,3}|\s{1,3})(?P<id>[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})", _F
)
_UUID = re.compile(
    r"(?<![0-9a-f-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f-])", _F
)
_BARE_TRACE = re.compile(r"(?<![\w-])(?:t|tr|trace)[-_][0-9]{1,18}(?![\w-])", _F)
# A short word, "-" or "_", then letters and digits with a digit among them: "t-9f3ac2", "req_7b1e0c",
# "INC-2041". Taken as a trace id even when none is stored (the answer then says so); a bare hash or
# version in the text is not ("9f3ac2d1", "v2.3.1"): those are trace ids only when stored.
_PREFIXED_ID = re.compile(r"(?<![\w.:/-])[A-Za-z]{1,8}[-_](?=[A-Za-z]*[0-9])[A-Za-z0-9]{4,64}(?![\w.:/-]*[\w])", _F)
# Tokens that may be trace ids: letters and digits with inner "-", "_", ".", ":", "/" or "#" (looked up
# in the store, see trace_candidates).
_ID_TOKEN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.:/#-]{0,126}[A-Za-z0-9])?")
# Id-like tokens that are something else when not stored: versions, times, numbers with units.
_NOT_AN_ID = re.compile(
    r"v?[0-9]+(?:\.[0-9]+)+(?:[-+.][A-Za-z0-9.]+)?|[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?(?:am|pm)?"
    r"|[0-9]+(?:[a-z]{1,3})?|[0-9]{4}-[0-9]{2}-[0-9]{2}(?:t[0-9:.]+z?)?",
    _F,
)
_TIMELINE_OBJECT = re.compile(
    r"\b(?:time\s?line|chronolog\w*|history|sequence\s+of\s+events|order\s+of\s+events|what\s+happened)"
    r"\s+(?:(?:of|for|in|with|on|to)\s+)?(?:(?:the|this|that)\s+)?(?:(?:trace|request|incident|release|id)\s+)?"
    r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.:/#-]{0,126}[A-Za-z0-9])",
    _F,
)
_MAX_CANDIDATES = 32  # candidate tokens looked up in the store (each in three cases)
_MAX_TRACE_SPANS = 32  # a question naming more trace ids than this is not about traces: stop looking


def inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    """Is ``pos`` inside one of ``spans`` (at most a few dozen, see _MAX_TRACE_SPANS)?"""
    return any(a <= pos < b for a, b in spans)


@dataclass(frozen=True, slots=True)
class TraceSpan:
    start: int
    end: int
    value: str  # the trace id to filter on (as stored when known)
    why: str  # for the note


def trace_candidates(question: str) -> list[str]:
    """Tokens of ``question`` that could be trace ids, to look up in the store (at most 32, in order).

    A candidate is a run of letters and digits with inner ``-``, ``_``, ``.``, ``:``, ``/`` or ``#``,
    holding a digit or a separator (so plain words are not looked up), plus its lower- and upper-case
    forms. Pure and linear; the lookup (:meth:`memory_agent.store.events.EventStore.known_traces`) is
    an index seek per candidate, so recognising any shape of trace id costs nothing per stored trace.
    """
    out: list[str] = []
    for m in _ID_TOKEN.finditer(question[: 4 * 1024]):
        token = m.group()
        if len(token) < 2 or not any(c.isdigit() or c in "-_.:/#" for c in token):
            continue
        for form in (token, token.lower(), token.upper()):
            if form not in out:
                out.append(form)
        if len(out) >= 3 * _MAX_CANDIDATES:
            break
    return out


def find_traces(
    question: str, known: Mapping[str, str], vocabulary: VocabularyIndex, intent: Intent, notes: list[str]
) -> tuple[list[TraceSpan], list[TraceSpan]]:
    """Trace ids in the question: ``(stored, written)``.

    ``stored``: tokens equal to a stored trace id (``known`` maps a candidate as written, or its lower or
    upper case, to the stored id). ``written``: ids asked for by the way they are written, stored or
    not: after the word "trace", a UUID, ``t-81``, a prefixed id such as ``req_7b1e0c``, and the object
    of a timeline ("timeline of a1b2c3d4"); a token that is a stored event type, service or handle is
    not one. The window is found afterwards, outside stored ids (``rel-2026-11-20-3`` holds a date).
    """
    stored: list[TraceSpan] = []
    if known:
        for m in _ID_TOKEN.finditer(question[: 4 * 1024]):
            token = m.group()
            value = known.get(token) or known.get(token.lower()) or known.get(token.upper())
            if value is not None:
                stored.append(TraceSpan(m.start(), m.end(), value, "a stored trace id"))
                if len(stored) >= _MAX_TRACE_SPANS:
                    break
    written: list[TraceSpan] = []
    patterns: list[tuple[re.Pattern[str], str]] = [
        (_TRACE_AFTER_WORD, "after 'trace'"), (_UUID, "a UUID"), (_BARE_TRACE, "shaped like a trace id"),
        (_PREFIXED_ID, "shaped like a trace id"),
    ]
    if intent == "timeline":
        patterns.append((_TIMELINE_OBJECT, "what the timeline is of"))
    for pattern, why in patterns:
        count = 0
        for m in pattern.finditer(question):
            span = m.span("id") if "id" in pattern.groupindex else m.span()
            value = question[span[0] : span[1]].rstrip(".:-_/#")
            if pattern is _UUID:
                value = value.lower()
            if not any(c.isdigit() for c in value):
                continue
            if pattern is not _TRACE_AFTER_WORD and _NOT_AN_ID.fullmatch(value):
                continue
            if vocabulary.services.same_tokens(value) or vocabulary.handles.same_tokens(value) or (
                vocabulary.events.same_tokens(value)
            ):
                continue
            written.append(TraceSpan(span[0], span[0] + len(value), value, why))
            count += 1
            if count >= _MAX_TRACE_SPANS:
                break
    return stored, written


def merge_traces(
    question: str, stored: list[TraceSpan], written: list[TraceSpan], wm: WindowMatch | None, notes: list[str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """Trace filter values in question order and their spans: stored ids first, then written ids that
    overlap neither a stored id nor the time phrase."""
    taken: list[TraceSpan] = list(stored)
    for w in written:
        if wm is not None and w.start < wm.end and w.end > wm.start:
            continue
        if any(w.start < t.end and w.end > t.start for t in taken):
            continue
        taken.append(w)
    taken.sort(key=lambda t: t.start)
    traces: list[str] = []
    spans: list[tuple[int, int]] = []
    for t in taken:
        spans.append((t.start, t.end))
        if t.value not in traces and len(traces) < _MAX_TRACE_SPANS:
            traces.append(t.value)
            notes.append(f"trace={clip(t.value, _NOTE_CHARS)} from {clip(question[t.start : t.end], _NOTE_CHARS)!r} ({t.why})")
    return traces, spans
