"""The wire contract of @memory: what a payload sent to ``memory`` means, and what comes back.

Pure functions, no I/O. A payload that parses as a JSON object is a *report*, unless it has a
``"query"`` key (a *structured question*) or an ``"op"`` key (an *operation*, e.g. ``{"op": "stats"}``);
anything else sent with a non-JSON content type is a plain-text *question*. A payload that claims a JSON
content type but does not parse is an error, as is a report without a usable ``event``.
Replies: ``{"status": "stored", "id": <int>, "duplicate": <bool>}`` or ``{"status": "error", "error": "..."}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from dateutil import parser as dateparser

from memory_agent.errors import QueryError, ReportError, excerpt
from memory_agent.types import Filters, InsertResult, NewEvent
from mesh import RoomEvent

__all__ = [
    "MAX_EVENT_CHARS",
    "MAX_LIMIT",
    "MAX_QUESTION_CHARS",
    "QUESTION_MODES",
    "ROOM_EVENTS_KEPT",
    "Operation",
    "Question",
    "QuestionMode",
    "Report",
    "Request",
    "build_event",
    "classify",
    "error_reply",
    "event_name",
    "indexed_text",
    "iso_utc",
    "parse_time",
    "room_report",
    "service_name",
    "stored_reply",
]

MAX_QUESTION_CHARS = 8_000
MAX_EVENT_CHARS = 200
MAX_LIMIT = 10_000
_MAX_INT_DIGITS = 4_300  # Python's default limit on int() of a decimal string
# Reports may say when they happened as unix seconds within these bounds (1970 .. 2200, UTC).
_MIN_EPOCH, _MAX_EPOCH = 0.0, 7_258_118_400.0
_JSON_TYPES = ("application/json", "text/json")
_FILTER_KEYS = ("event", "service", "from_handle", "trace_id")
QuestionMode = Literal["auto", "search"]
"""How a structured question is answered: the rules choose (``auto``) or always ranked search."""
QUESTION_MODES: tuple[QuestionMode, ...] = ("auto", "search")
# Fields whose text says most about an event; they lead the indexed text in this order.
_LEAD_FIELDS = ("summary", "text", "message", "reason", "description", "cause", "root_cause", "details")
_NOT_INDEXED = frozenset({"event", "trace_id", "occurred_at"})


@dataclass(frozen=True, slots=True)
class Report:
    """A JSON object to be stored as an event."""

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Question:
    """A question, plain (``structured=False``: answer in text) or structured (answer in JSON).

    ``since``/``until``: seconds since the epoch, UTC, from the structured form; they override any time
    phrase in the text. ``limit``: events wanted, ``None`` = the configured default. ``as_of``: seconds
    since the epoch, UTC, that relative phrases ("last week", "yesterday", "in June") are read from,
    ``None`` = now (replaying history, a postmortem). ``mode``: ``"auto"`` lets the rules pick the
    intent and turn recognised names into filters; ``"search"`` always gives the ranked hybrid search,
    narrowed only by the window and the structured ``filters``. ``min_seq``: read your own writes in a
    cluster: the answering replica first waits (bounded, ``[cluster] read_wait``) until it has applied
    the events stream up to this id (the ``"id"`` of a ``stored`` reply); ignored on a single node, where
    an acknowledged report is already stored.
    """

    text: str
    structured: bool = False
    limit: int | None = None
    since: float | None = None
    until: float | None = None
    filters: Filters = field(default_factory=Filters)
    as_of: float | None = None
    mode: QuestionMode = "auto"
    min_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """An administrative request such as ``{"op": "stats"}``."""

    op: str
    args: dict[str, Any]


Request = Report | Question | Operation


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON: send numbers as finite values or strings")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400, which float() turns into inf
        raise ValueError(f"the number {text[:30]} does not fit a 64-bit float: send it as a string")
    return value


def _whole_number(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:  # int() would refuse it anyway, advising sys.set_int_max_str_digits()
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is too long: send it as a string")
    return int(text)


def _check_unicode(stripped: str, obj: Any) -> None:
    """Refuse strings holding an unpaired UTF-16 surrogate (``"\\ud800"``): they cannot be stored or embedded."""
    if "\\u" not in stripped:  # surrogates can only come from \u escapes: UTF-8 bytes cannot carry them
        return
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise ReportError(
            f"the JSON holds an unpaired surrogate escape ({bad}), which is not valid Unicode: send text as "
            "valid UTF-8 (binary data as base64)"
        ) from None
    except RecursionError:
        raise ReportError("the JSON is nested too deeply: keep reports under a few levels of nesting") from None


def _is_json_type(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base in _JSON_TYPES or base.endswith("+json")


def classify(payload: str, content_type: str, *, tz: tzinfo) -> Request:
    """Read a payload sent to @memory. Raises ReportError (bad report) or QueryError (bad question).

    A payload that parses as a JSON object is taken as JSON whatever its content type, so the one-line
    ``open_session("memory", json.dumps({...}))`` works with the SDK's default ``text/plain``; one that
    starts with ``{`` but does not parse (say ``json.dumps`` wrote ``NaN``) is an error, not a question.
    """
    stripped = payload.strip()
    obj: Any = None
    parsed = False
    if stripped.startswith(("{", "[")) or _is_json_type(content_type):
        try:
            obj = json.loads(stripped, parse_constant=_reject_constant, parse_float=_finite_float,
                             parse_int=_whole_number)
            parsed = True
        except RecursionError:
            raise ReportError("the JSON is nested too deeply: keep reports under a few levels of nesting") from None
        except ValueError as exc:
            if _is_json_type(content_type) or stripped.startswith("{"):
                raise ReportError(
                    f"payload is not valid JSON ({exc}): send one JSON object such as "
                    '{"event": "rollback", "service": "api-gateway"}'
                ) from None
    if not parsed:
        return _plain_question(payload)
    _check_unicode(stripped, obj)
    if not isinstance(obj, dict):
        raise ReportError(
            f"payload is JSON {type(obj).__name__}, not an object: send one JSON object such as "
            '{"event": "rollback", "service": "api-gateway"}, or plain text to ask a question'
        )
    if "query" in obj:
        return _structured_question(obj, tz=tz)
    if "op" in obj:
        op = obj["op"]
        if not isinstance(op, str) or not op:
            raise ReportError('"op" must be a non-empty string naming an operation, e.g. {"op": "stats"}')
        return Operation(op=op, args={k: v for k, v in obj.items() if k != "op"})
    return Report(payload=obj)


def _plain_question(text: str) -> Question:
    text = text.strip()
    if not text:
        raise QueryError("the question is empty: send a question in plain text, e.g. 'What rollbacks happened today?'")
    if len(text) > MAX_QUESTION_CHARS:
        raise QueryError(f"the question is {len(text)} characters long; ask in at most {MAX_QUESTION_CHARS}")
    return Question(text=text)


def _structured_question(obj: dict[str, Any], *, tz: tzinfo) -> Question:
    query = obj["query"]
    if not isinstance(query, str) or not query.strip():
        raise QueryError(
            '"query" must be a non-empty string, e.g. {"query": "What rollbacks happened today?"}', field="query"
        )
    base = _plain_question(query)
    limit = obj.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT):
        raise QueryError(f'"limit" must be a whole number from 1 to {MAX_LIMIT}, not {excerpt(limit)}', field="limit")
    since = parse_time(obj.get("since"), "since", tz=tz, error=QueryError) if obj.get("since") is not None else None
    until = parse_time(obj.get("until"), "until", tz=tz, error=QueryError) if obj.get("until") is not None else None
    if since is not None and until is not None and since >= until:
        raise QueryError('"since" must be earlier than "until"', field="since")
    as_of = parse_time(obj.get("as_of"), "as_of", tz=tz, error=QueryError) if obj.get("as_of") is not None else None
    mode = obj.get("mode", "auto")
    if mode not in QUESTION_MODES:
        raise QueryError(
            f'"mode" must be "auto" (the rules choose list, count, timeline, why or search) or "search" '
            f"(always the ranked search), not {excerpt(mode)}", field="mode"
        )
    min_seq = obj.get("min_seq")
    if min_seq is not None and (isinstance(min_seq, bool) or not isinstance(min_seq, int) or min_seq < 0):
        raise QueryError(f'"min_seq" must be a whole number >= 0 (the "id" of a stored reply), not {excerpt(min_seq)}',
                         field="min_seq")
    raw_filters = obj.get("filters") or {}
    if not isinstance(raw_filters, dict):
        raise QueryError(
            '"filters" must be an object such as {"event": "rollback", "service": "api-gateway"}', field="filters"
        )
    unknown = sorted(set(raw_filters) - set(_FILTER_KEYS))
    if unknown:
        raise QueryError(
            f"unknown filter(s) {excerpt(', '.join(unknown), quote=False)}: use {', '.join(_FILTER_KEYS)}", field="filters"
        )
    values: dict[str, tuple[str, ...]] = {}
    for key in _FILTER_KEYS:
        raw = raw_filters.get(key)
        if raw is None:
            continue
        items = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(item, str) and item for item in items):
            raise QueryError(f'filter "{key}" must be a string or a list of strings', field="filters")
        values[key] = tuple(item.strip().lower() if key == "event" else item for item in items)
    return Question(
        text=base.text, structured=True, limit=limit, since=since, until=until, filters=Filters(**values),
        as_of=as_of, mode=mode, min_seq=min_seq,
    )


def parse_time(value: Any, name: str, *, tz: tzinfo, error: type[Exception]) -> float:
    """A time given by a caller, ISO-8601 (naive = in ``tz``) or unix seconds, as seconds since the epoch,
    UTC, within 1970..2200. Raises ``error(message)`` naming ``name`` (``ReportError`` for a report's
    field, ``QueryError`` for a question's); the message quotes at most an excerpt of ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise error(f'"{name}" must be an ISO-8601 time such as "2026-11-20T14:02:00Z" or unix seconds')
    if isinstance(value, str):
        try:
            parsed = dateparser.isoparse(value.strip())
        except (ValueError, OverflowError):
            raise error(
                f'"{name}" {excerpt(value)} is not an ISO-8601 time: use e.g. "2026-11-20T14:02:00Z"'
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=tz)
        seconds = parsed.timestamp()
    else:
        try:
            seconds = float(value)
        except OverflowError:
            raise error(f'"{name}" is outside 1970..2200: send seconds since the epoch or an ISO-8601 time') from None
        if not math.isfinite(seconds):
            raise error(f'"{name}" must be a finite number of seconds since the epoch')
        if _MAX_EPOCH < seconds <= _MAX_EPOCH * 1000:
            raise error(f'"{name}" {excerpt(value)} looks like milliseconds: send seconds since the epoch')
    if not _MIN_EPOCH <= seconds <= _MAX_EPOCH:
        raise error(f'"{name}" is outside 1970..2200: send seconds since the epoch or an ISO-8601 time')
    return seconds


def build_event(
    report: Report,
    *,
    message_id: str,
    session: str,
    from_handle: str,
    trace_id: str,
    sent_at: float,
    received_at: float,
    tz: tzinfo,
) -> NewEvent:
    """Validate a report and make the event to store. Raises ReportError saying what to fix.

    The payload's own ``trace_id`` wins over the envelope's; ``occurred_at`` defaults to the send time.
    """
    payload = report.payload
    event = event_name(payload.get("event"))
    own_trace = payload.get("trace_id")
    if own_trace is not None:
        if isinstance(own_trace, bool) or not isinstance(own_trace, (str, int)) or not str(own_trace).strip():
            raise ReportError('"trace_id" must be a non-empty string, e.g. "t-81"', field="trace_id")
        trace_id = str(own_trace).strip()
    raw_time = payload.get("occurred_at")
    if raw_time is None and not _MIN_EPOCH <= sent_at <= _MAX_EPOCH:
        raise ReportError(
            f"the sender's clock says {sent_at:.0f} s since the epoch, outside 1970..2200, and the report has "
            'no "occurred_at": fix the clock, or say when it happened in "occurred_at"'
        )
    occurred_at = (
        sent_at if raw_time is None else parse_time(raw_time, "occurred_at", tz=tz, error=ReportError)
    )
    return NewEvent(
        message_id=message_id,
        session=session,
        from_handle=from_handle,
        trace_id=trace_id,
        event=event,
        service=service_name(payload.get("service")),
        occurred_at=occurred_at,
        received_at=received_at,
        payload=payload,
        text=indexed_text(event, payload),
    )


def event_name(value: Any) -> str:
    """A report's ``"event"``: whitespace folded, lower case, at most :data:`MAX_EVENT_CHARS` characters.

    The one rule for event names (reports and imported lines). Raises ``ReportError(field="event")``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ReportError(
            'a report needs an "event" string naming what happened, e.g. {"event": "rollback", ...}; '
            'to ask a question send plain text or {"query": "..."}',
            field="event",
        )
    name = " ".join(value.split()).lower()
    if len(name) > MAX_EVENT_CHARS:
        raise ReportError(
            f'"event" is {len(name)} characters; name the kind of event in at most {MAX_EVENT_CHARS}', field="event"
        )
    return name


def service_name(value: Any) -> str | None:
    """A report's top-level ``"service"`` when it is a non-empty string (stripped), else ``None``."""
    return value.strip() if isinstance(value, str) and value.strip() else None


#: Room events @memory keeps: a posted message, and the room closing. Membership changes are logged only.
ROOM_EVENTS_KEPT = ("message_posted", "room_closed")


def room_report(event: RoomEvent) -> Report:
    """The report @memory stores for a room event it was sent as a member (``message_posted``,
    ``room_closed``): ``{"event": "room_message" | "room_closed", "room_id", "room_title", "room_seq",
    "content_type", "message"}``; ``message`` is the posted payload, parsed when it is a JSON object
    (text otherwise, absent for ``room_closed``). The caller stores it with the poster as
    ``from_handle``, the event's id as ``message_id`` (a redelivery is stored once), its trace id (the
    post's, else the room's) and its send time as ``occurred_at``."""
    payload: dict[str, Any] = {
        "event": "room_message" if event.event_type == "message_posted" else event.event_type,
        "room_id": event.room_id,
        "room_title": event.title,
        "room_seq": event.room_seq,
    }
    if event.event_type == "message_posted":
        payload["content_type"] = event.content_type
        message: Any = event.payload
        if event.payload.lstrip().startswith("{"):
            try:
                parsed = json.loads(event.payload, parse_constant=_reject_constant, parse_float=_finite_float,
                                    parse_int=_whole_number)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, dict):
                message = parsed
        payload["message"] = message
    return Report(payload=payload)


def indexed_text(event: str, payload: dict[str, Any]) -> str:
    """The text embedded and full-text indexed for an event: the event kind, then the payload's fields.

    Fields that usually carry the story (``summary``, ``text``, ``reason`` ...) come first, as bare text;
    the others follow as ``key: value``. Event names are written with spaces (``test_quarantined`` →
    ``test quarantined``) so both the tokeniser and the model see words.
    """
    parts = [event.replace("_", " ").replace("-", " ")]
    for key in _LEAD_FIELDS:
        value = payload.get(key)
        if value is not None:
            parts.append(_flat(value))
    for key, value in payload.items():
        if key in _NOT_INDEXED or key in _LEAD_FIELDS or value is None:
            continue
        parts.append(f"{key.replace('_', ' ')}: {_flat(value)}")
    return ". ".join(part for part in parts if part)


def _flat(value: Any, depth: int = 0) -> str:
    """A field's value as words: strings as they are, objects as ``key: value, ...`` and lists joined by
    commas (nested ones in parentheses), so the model and the tokeniser read words, not JSON punctuation.
    Past 8 levels the rest is JSON."""
    if isinstance(value, str):
        return value.strip()
    if depth < 8 and isinstance(value, dict) and value:
        inner = [f"{str(k).replace('_', ' ')}: {_flat(v, depth + 1)}" for k, v in value.items() if v is not None]
        text = ", ".join(inner)
        return f"({text})" if depth else text
    if depth < 8 and isinstance(value, list) and value:
        text = ", ".join(_flat(v, depth + 1) for v in value if v is not None)
        return f"({text})" if depth else text
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def stored_reply(result: InsertResult) -> str:
    """JSON ``{"status": "stored", "id": int, "duplicate": bool}``."""
    return json.dumps({"status": "stored", "id": result.id, "duplicate": result.duplicate})


def error_reply(message: str) -> str:
    """JSON ``{"status": "error", "error": message}``."""
    return json.dumps({"status": "error", "error": message})


def iso_utc(seconds: float) -> str:
    """Seconds since the epoch → ISO-8601 in UTC with a ``Z``, to the second."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
