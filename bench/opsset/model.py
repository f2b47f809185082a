"""The labelled ops set: reports, questions, and the rules their gold answers follow.

A :class:`Report` is what one agent sends to @memory (``handle``, ``payload``, and the envelope's trace id
when the payload has none) plus ``meta``, the generator's own record of it (trace, times, story), which
is never sent. ``index`` is the report's position in send order, which is the order reports are
received in: late reports (``received_at`` hours or days after ``occurred_at``) arrive after reports
that happened later.

Gold answers follow the wire contract of README.md ("How questions are answered"), in UTC:

* windows are half-open ``[since, until)``: "today"/"yesterday" are calendar days, weeks are ISO weeks
  starting Monday ("this week", "last week"), "on Friday" is the most recent Friday before today,
  "in October" the calendar month, "between Nov 3 and Nov 5" includes Nov 5, rolling ranges ("in the
  last 7 days", "in the past 24 hours") start that long before ``as_of`` and are open-ended;
* list, count, window and entity gold is the exact set of reports whose ``event``, ``service``
  (payload field), reporting handle and environment (payload ``env``) match the question's spec
  inside its window;
* a timeline is every report carrying the trace id, in ``occurred_at`` order;
* a why question is about the matching event whose trace explains it best: a root cause on its trace
  first, then an anomaly on its trace before it, then the most recent (:func:`why_choice`; issue 11
  item 5);
* a paraphrase shares no content word with its gold report (:func:`content_stems`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from dateutil import parser as dateparser
from dateutil.relativedelta import relativedelta

Kind = Literal["list", "count", "window", "entity", "timeline", "why", "ranked", "paraphrase", "no_answer"]
KINDS: tuple[Kind, ...] = ("list", "count", "window", "entity", "timeline", "why", "ranked", "paraphrase", "no_answer")
EXACT_KINDS: frozenset[str] = frozenset({"list", "count", "window", "entity", "timeline"})
"""Kinds whose gold is an exact set of reports (count: its size)."""
RANKED_KINDS: frozenset[str] = frozenset({"why", "ranked", "paraphrase"})
"""Kinds whose gold is one report (or a few equivalent ones) that should be ranked first."""

TRACE_SHAPES: tuple[str, ...] = ("tnum", "thex", "req", "hex8", "uuid", "inc", "ulid", "release")
"""``t-81``, ``t-9f3ac2``, ``req_7b1e0c``, ``a1b2c3d4``, a UUID, ``INC-2041``, a ULID, ``rel-2026-11-20-3``."""

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Report:
    """One report as sent: ``payload`` (JSON object) from ``handle``; ``envelope_trace_id`` is the
    trace id put on the envelope (``None``: the payload carries ``trace_id`` and the SDK makes one up).
    ``meta`` is the generator's record: ``trace_id``, ``occurred_at`` and ``received_at`` (ISO-8601 UTC),
    ``story``/``part`` for incident reports. Never sent."""

    index: int
    handle: str
    payload: dict[str, Any]
    envelope_trace_id: str | None
    meta: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.payload["event"])

    @property
    def trace_id(self) -> str:
        return str(self.meta["trace_id"])

    @property
    def occurred_at(self) -> float:
        """Seconds since the epoch, UTC."""
        return iso_seconds(self.meta["occurred_at"])

    @property
    def service(self) -> str | None:
        value = self.payload.get("service")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "handle": self.handle, "envelope_trace_id": self.envelope_trace_id,
                "payload": self.payload, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Report:
        return cls(int(obj["index"]), str(obj["handle"]), dict(obj["payload"]), obj.get("envelope_trace_id"),
                   dict(obj.get("meta") or {}))


@dataclass(frozen=True, slots=True)
class OpsQuestion:
    """A question with its gold answer.

    ``gold``: report indices; for exact kinds the whole answer set (in time order for a timeline), for
    ranked kinds the report(s) the question is about (any of them counts as found), empty for
    ``no_answer``. ``count``: the gold count of a count question. ``trace``: the trace asked about
    (timeline) or the gold report's trace (why). ``spec``: how the gold was selected (see
    :func:`select`); ``tags``: labels for breakdowns (window rule, trace shape, phrasing).
    """

    id: str
    kind: Kind
    text: str
    as_of: str
    gold: tuple[int, ...]
    count: int | None = None
    trace: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "text": self.text, "as_of": self.as_of, "gold": list(self.gold),
                "count": self.count, "trace": self.trace, "spec": self.spec, "tags": list(self.tags)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OpsQuestion:
        kind = obj["kind"]
        if kind not in KINDS:
            raise ValueError(f"question {obj.get('id')}: unknown kind {kind!r}")
        return cls(str(obj["id"]), kind, str(obj["text"]), str(obj["as_of"]), tuple(int(i) for i in obj["gold"]),
                   obj.get("count"), obj.get("trace"), dict(obj.get("spec") or {}), tuple(obj.get("tags") or ()))


@dataclass(frozen=True, slots=True)
class OpsSet:
    """A generated history and its questions; ``as_of`` is the "now" of every question (ISO-8601 UTC)."""

    seed: int
    as_of: str
    weeks: int
    reports: tuple[Report, ...]
    questions: tuple[OpsQuestion, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": "mesh-memory ops set 1", "seed": self.seed, "as_of": self.as_of, "weeks": self.weeks,
                "timezone": "UTC", "reports": [r.to_json() for r in self.reports],
                "questions": [q.to_json() for q in self.questions]}

    def dumps(self) -> str:
        """Canonical JSON text (same set, same bytes)."""
        return json.dumps(self.to_json(), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OpsSet:
        if obj.get("format") != "mesh-memory ops set 1":
            raise ValueError("not an ops set written by bench/opsgen.py (no 'format': 'mesh-memory ops set 1')")
        return cls(int(obj["seed"]), str(obj["as_of"]), int(obj["weeks"]),
                   tuple(Report.from_json(r) for r in obj["reports"]),
                   tuple(OpsQuestion.from_json(q) for q in obj["questions"]))


# --- time ---------------------------------------------------------------------------------------------


def iso(seconds: float) -> str:
    """Seconds since the epoch -> ISO-8601 UTC with ``Z`` (milliseconds when not whole)."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=65_536)
def iso_seconds(text: str) -> float:
    """ISO-8601 (naive = UTC) -> seconds since the epoch."""
    moment = dateparser.isoparse(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def payload_time(value: Any) -> float:
    """A payload's ``occurred_at`` as @memory reads it (README wire contract): ISO-8601 with or without
    offset (naive = the daemon's zone, UTC here) or unix seconds. Raises ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"occurred_at {value!r} is not a time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return iso_seconds(value.strip())
    raise ValueError(f"occurred_at {value!r} is not a time")


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def window_bounds(rule: str | None, as_of: float) -> tuple[float | None, float | None]:
    """The window ``[since, until)`` (seconds, UTC; ``None`` = unbounded) of a window rule at ``as_of``.

    Rules: ``today``, ``yesterday``, ``this_week``, ``last_week``, ``since_monday``, ``this_month``,
    ``last_month``, ``rolling_days:N``, ``rolling_hours:N``, ``weekday:<name>`` (most recent before
    today), ``days_ago:N``, ``date:YYYY-MM-DD``, ``month:YYYY-MM``, ``between:YYYY-MM-DD:YYYY-MM-DD``
    (end day included); ``None`` = no window. Raises ``ValueError`` for an unknown rule.
    """
    if rule is None:
        return None, None
    now = datetime.fromtimestamp(as_of, tz=UTC)
    today = now.date()
    monday = today - timedelta(days=today.weekday())
    name, _, arg = rule.partition(":")
    if name == "today":
        return _midnight(today), _midnight(today + timedelta(days=1))
    if name == "yesterday":
        return _midnight(today - timedelta(days=1)), _midnight(today)
    if name == "this_week":
        return _midnight(monday), _midnight(monday + timedelta(days=7))
    if name == "last_week":
        return _midnight(monday - timedelta(days=7)), _midnight(monday)
    if name == "since_monday":
        return _midnight(monday), None
    if name in ("this_month", "last_month"):
        first = today.replace(day=1) - relativedelta(months=1 if name == "last_month" else 0)
        return _midnight(first), _midnight(first + relativedelta(months=1))
    if name == "rolling_days":
        return (now - relativedelta(days=int(arg))).timestamp(), None
    if name == "rolling_hours":
        return as_of - 3600.0 * int(arg), None
    if name == "weekday":
        back = (today.weekday() - _WEEKDAYS.index(arg)) % 7 or 7
        day = today - timedelta(days=back)
        return _midnight(day), _midnight(day + timedelta(days=1))
    if name == "days_ago":
        day = today - timedelta(days=int(arg))
        return _midnight(day), _midnight(day + timedelta(days=1))
    if name == "date":
        day = date.fromisoformat(arg)
        return _midnight(day), _midnight(day + timedelta(days=1))
    if name == "month":
        first = date.fromisoformat(arg + "-01")
        return _midnight(first), _midnight(first + relativedelta(months=1))
    if name == "between":
        a, b = arg.split(":")
        return _midnight(date.fromisoformat(a)), _midnight(date.fromisoformat(b) + timedelta(days=1))
    raise ValueError(f"unknown window rule {rule!r}")


# --- gold rules ---------------------------------------------------------------------------------------


def matches(report: Report, spec: dict[str, Any], as_of: float,
            bounds: tuple[float | None, float | None] | None = None) -> bool:
    """Does ``report`` satisfy ``spec`` (``event``, ``service``, ``from_handle``, ``env``, ``trace``: lists
    of accepted values, missing = any; ``payload``: fields that must be equal; ``window``: a
    :func:`window_bounds` rule, or its ``bounds`` when already computed)? Other keys are notes and are
    ignored."""
    since, until = bounds if bounds is not None else window_bounds(spec.get("window"), as_of)
    when = report.occurred_at
    if since is not None and when < since:
        return False
    if until is not None and when >= until:
        return False
    checks = (("event", report.event), ("service", report.service), ("from_handle", report.handle),
              ("env", report.payload.get("env")), ("trace", report.trace_id))
    if not all(not spec.get(key) or value in spec[key] for key, value in checks):
        return False
    return all(report.payload.get(k) == v for k, v in (spec.get("payload") or {}).items())


def select(reports: Iterable[Report], spec: dict[str, Any], as_of: float) -> list[Report]:
    """Every report matching ``spec``, in ``occurred_at`` order (ties by index)."""
    bounds = window_bounds(spec.get("window"), as_of)
    return sorted((r for r in reports if matches(r, spec, as_of, bounds)), key=lambda r: (r.occurred_at, r.index))


def trace_reports(reports: Iterable[Report], trace: str) -> list[Report]:
    """The timeline of ``trace``: its reports in ``occurred_at`` order (ties by index)."""
    return sorted((r for r in reports if r.trace_id == trace), key=lambda r: (r.occurred_at, r.index))


def why_choice(candidates: Sequence[Report], reports: Sequence[Report]) -> Report | None:
    """The candidate a why question is about: a root cause on its trace first, then an anomaly on its
    trace before it, then the most recent (issue 11 item 5). ``None`` when there is no candidate."""
    by_trace: dict[str, list[Report]] = {}
    for r in reports:
        by_trace.setdefault(r.trace_id, []).append(r)

    def rank(c: Report) -> tuple[bool, bool, float, int]:
        mates = [r for r in by_trace.get(c.trace_id, []) if r.index != c.index]
        cause = any(r.event == "root_cause" for r in mates)
        before = any(r.event == "anomaly" and r.occurred_at <= c.occurred_at for r in mates)
        return cause, before, c.occurred_at, c.index

    return max(candidates, key=rank, default=None)


# --- words --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def _words(text: str) -> frozenset[str]:
    """A word set written as one space-separated string."""
    return frozenset(text.split())


# English function words: those in both memory_agent/textnorm.py's and memory_agent/sqlbuild.py's lists
# (as of 2026-11), so a word either side searches with counts as content here. Kept apart from the
# package on purpose: the paraphrase property must not move when @memory's lists change.
FUNCTION_WORDS: frozenset[str] = _words("""
    a about above after again against all am an and any are as at be been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
    not now of off on once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours yourself
    yourselves
""")


@lru_cache(maxsize=1)
def _stemmers() -> tuple[Any, Any]:
    import Stemmer  # PyStemmer: Porter (1980) and Snowball English (Porter2)

    return Stemmer.Stemmer("porter"), Stemmer.Stemmer("english")


def content_stems(text: str) -> set[str]:
    """The content words of ``text`` as stems: tokens as SQLite FTS5 ``unicode61`` splits them (runs of
    letters and digits, lower-cased), function words dropped, each word kept as its Porter (1980) stem
    and its Snowball English stem, with a final ``y`` read as ``i`` (as memory_agent/textnorm.py does).
    Two texts share a content word when these sets meet, so "rolled"/"roll", "deploys"/"deployment",
    "anomalies"/"anomaly" count as shared."""
    porter, english = _stemmers()
    out: set[str] = set()
    for word in _TOKEN.findall(text.lower()):
        if word in FUNCTION_WORDS:
            continue
        for stem in (porter.stemWord(word), english.stemWord(word)):
            out.add(stem[:-1] + "i" if stem.endswith("y") and len(stem) > 2 else stem)
    return out


def report_text(report: Report) -> str:
    """Every word a report puts before @memory: its event type, each payload key and value (not
    ``occurred_at``), its handle and its trace id. A superset of the text @memory indexes."""
    parts = [report.event.replace("_", " "), report.handle, report.trace_id]
    for key, value in report.payload.items():
        if key in ("event", "occurred_at"):
            continue
        parts.append(key)
        parts.append(value if isinstance(value, str) else json.dumps(value))
    return " . ".join(parts)
