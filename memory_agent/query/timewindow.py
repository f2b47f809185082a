"""Time phrases in plain-language questions → half-open windows ``[since, until)`` in seconds, UTC.

Rules, no LLM. Every phrase is read relative to ``now`` in the configured time zone ``tz``: "today" is
local midnight to local midnight, weeks are ISO weeks starting Monday. Decisions:

* Rolling ranges ("last 7 days", "past 24 hours", "in the last hour", "over the past three days",
  "the last week", "past month") end at the present and are open-ended (``until=None``), so an event
  stamped a little in the future by a skewed clock is still found. Days, weeks, months and years step
  back in local wall-clock time (``relativedelta``), seconds to hours in absolute time.
* Bare "last week" / "last month" / "last year" (no "the", no number, no "past") are the previous
  calendar week / month / year, like "this week" / "this month" are the current ones.
* A bare weekday ("Friday", "on Friday") and "last Friday" mean the most recent Friday *before* today,
  a week ago if today is Friday: people say "today" for today. "this Friday" is the Friday of the
  current ISO week, even if it is still ahead.
* A month alone needs a preposition ("in November", "since May") and means the most recent such month
  not in the future; "last November" the most recent one before the current month. A month day without a
  year ("Nov 3") is the most recent one not in the future.
* "since X" and "from X" run from the start of X, open-ended; "after X" from the end of X; "before X"
  until the start of X; "until X" until the end of X; "between X and Y" / "from X to Y" from the start
  of X to the end of Y (the end day is included).
* "this morning" is 00:00-12:00, "this afternoon" 12:00-18:00, "this evening"/"tonight" 18:00-24:00,
  "last night" 18:00 yesterday to 06:00 today.
* Dates that do not exist ("2026-02-30") give no window; ``scan_window`` reports them in ``rejected``.

When a question holds several time phrases the leftmost (then the longest) wins. All patterns are
linear-time regular expressions; explicit date strings go to ``dateutil.parser``, month arithmetic to
``relativedelta``. Nothing here raises on any question string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from dateutil import parser as date_parser
from dateutil.relativedelta import relativedelta

from memory_agent.types import TimeWindow

__all__ = ["WindowMatch", "WindowScan", "parse_window", "scan_window"]


@dataclass(frozen=True, slots=True)
class WindowMatch:
    """A recognised time phrase: the window, the phrase as written, and its span ``question[start:end]``."""

    window: TimeWindow
    phrase: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WindowScan:
    """``match`` as ``parse_window`` returns it, plus phrases that looked like dates but name no real day
    (e.g. ``"on 2026-02-30"``), so an answer can say why it ignored them."""

    match: WindowMatch | None
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Span:
    """An interval of aware datetimes; ``None`` is unbounded. ``weekday`` marks spans read from a
    weekday name, which "between Monday and Wednesday" may move a week forward."""

    start: datetime | None
    end: datetime | None
    weekday: bool = False


@dataclass(frozen=True, slots=True)
class _Ctx:
    now: datetime  # aware, in tz
    today: date
    tz: tzinfo


class _BadDate(Exception):
    """A phrase that looks like a date but names no real day (internal)."""


# --- vocabulary of the patterns -----------------------------------------------------------------------

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10,
    "nov": 11, "dec": 12,
}  # fmt: skip
_UNITS_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}  # fmt: skip

_MONTH_FULL = "january|february|march|april|may|june|july|august|september|october|november|december"
_MONTH_ANY = _MONTH_FULL + "|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
_WEEKDAY = "|".join(_WEEKDAYS)
_NUM = (
    r"(?:[0-9]{1,6}"
    r"|(?:" + "|".join(_TENS) + r")(?:[\s-]+(?:" + "|".join(_UNITS_WORDS) + r"))?"
    r"|" + "|".join(_TEENS) + "|" + "|".join(_UNITS_WORDS) + r"|a\s+couple\s+of|a\s+couple|couple\s+of"
    r"|a\s+few|few|an|a)"
)
_UNIT = r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|wks?|months?|years?|yrs?)"
_ORD = r"(?:st|nd|rd|th)?"
_YEAR = r"[0-9]{4}"

# Period patterns: (name, regex without groups). Order matters: longer forms first.
_P_PART_OF_DAY = r"this\s+(?:morning|afternoon|evening)|tonight|last\s+night"
_P_REL_DAY = r"the\s+day\s+before\s+yesterday|today|yesterday"
_P_CAL = r"(?:this|current|last|previous)\s+(?:week(?:end)?|month|year)"
_P_AGO = _NUM + r"\s+days?\s+ago"
_P_ISO = r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{4}/[0-9]{1,2}/[0-9]{1,2}"
_P_MD = r"(?:" + _MONTH_ANY + r")\.?\s+[0-9]{1,2}" + _ORD + r"(?:,?\s+" + _YEAR + ")?"
_P_DM = r"[0-9]{1,2}" + _ORD + r"\s+(?:of\s+)?(?:" + _MONTH_ANY + r")\.?(?:,?\s+" + _YEAR + ")?"
_P_WEEKDAY = r"(?:(?:last|this|past|previous)\s+)?(?:" + _WEEKDAY + ")"
_P_MONTH = r"(?:(?:last|this)\s+)?(?:" + _MONTH_ANY + r")(?:\s+" + _YEAR + ")?"
_P_MONTH_QUALIFIED = r"(?:last|this)\s+(?:" + _MONTH_FULL + r")(?:\s+" + _YEAR + ")?"
_P_YEAR = _YEAR

_BARE = (_P_PART_OF_DAY, _P_REL_DAY, _P_CAL, _P_AGO, _P_ISO, _P_MD, _P_DM, _P_WEEKDAY, _P_MONTH_QUALIFIED)
_WITH_PREP = (*_BARE, _P_MONTH, _P_YEAR)

_PERIOD_BARE = "(?:" + "|".join(_BARE) + ")"
_PERIOD_ANY = "(?:" + "|".join(_WITH_PREP) + ")"

_FLAGS = re.IGNORECASE | re.ASCII
_L = r"(?<![\w@-])"  # left boundary: not inside a word, handle or hyphenated name
_R = r"(?![\w-])"  # right boundary

_RE_BETWEEN = re.compile(
    _L + r"between\s+(?P<a>" + _PERIOD_ANY + r")\s+and\s+(?P<b>" + _PERIOD_ANY + ")" + _R, _FLAGS
)
_RE_FROM_TO = re.compile(
    _L
    + r"from\s+(?P<a>"
    + _PERIOD_ANY
    + r")\s+(?:to|until|till|through|thru)\s+(?P<b>"
    + _PERIOD_ANY
    + ")"
    + _R,
    _FLAGS,
)
_RE_ROLLING = re.compile(
    _L + r"(?:(?P<prep>in|over|during|within|for)\s+)?(?P<the>the\s+)?"
    r"(?P<rel>last|past|previous|prior|preceding)\s+(?:(?P<num>"
    + _NUM
    + r")\s+)?(?P<unit>"
    + _UNIT
    + ")"
    + _R,
    _FLAGS,
)
_RE_PREP = re.compile(
    _L
    + r"(?P<prep>since|after|before|until|till|on|in|during|from|for)\s+(?:the\s+)?(?P<a>"
    + _PERIOD_ANY
    + ")"
    + _R,
    _FLAGS,
)
_RE_BARE = re.compile(_L + r"(?P<a>" + _PERIOD_BARE + ")" + _R, _FLAGS)
_RE_EARLIER_TODAY = re.compile(_L + r"(?:earlier|so\s+far)\s+today" + _R, _FLAGS)

_MAX_REJECTS_PER_PATTERN = 8  # stop re-trying a pattern after this many unreal dates (bounded work)


# --- resolving one period -------------------------------------------------------------------------------


def _midnight(d: date, tz: tzinfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz)


def _days(d0: date, n: int, ctx: _Ctx, *, weekday: bool = False) -> _Span:
    return _Span(_midnight(d0, ctx.tz), _midnight(d0 + timedelta(days=n), ctx.tz), weekday)


def _hours(d0: date, h0: int, h1: int, ctx: _Ctx) -> _Span:
    base = _midnight(d0, ctx.tz)
    return _Span(base + timedelta(hours=h0), base + timedelta(hours=h1))


def _month_span(year: int, month: int, ctx: _Ctx) -> _Span:
    first = date(year, month, 1)
    return _Span(_midnight(first, ctx.tz), _midnight(first + relativedelta(months=1), ctx.tz))


def _parse_num(text: str) -> int:
    words = text.lower().replace("-", " ").split()
    if not words:
        raise ValueError("empty number")
    if words[0].isdigit():
        return int(words[0])
    joined = " ".join(words)
    if joined in ("a couple of", "a couple", "couple of"):
        return 2
    if joined in ("a few", "few"):
        return 3
    if joined in ("a", "an"):
        return 1
    total = 0
    for w in words:
        value = _TENS.get(w) or _TEENS.get(w) or _UNITS_WORDS.get(w)
        if value is None:
            raise ValueError(f"not a number word: {w}")
        total += value
    return total


def _resolve_part_of_day(text: str, ctx: _Ctx) -> _Span:
    t = " ".join(text.lower().split())
    if t == "last night":
        return _hours(ctx.today - timedelta(days=1), 18, 30, ctx)
    if t == "this morning":
        return _hours(ctx.today, 0, 12, ctx)
    if t == "this afternoon":
        return _hours(ctx.today, 12, 18, ctx)
    return _hours(ctx.today, 18, 24, ctx)  # this evening, tonight


def _resolve_rel_day(text: str, ctx: _Ctx) -> _Span:
    t = text.lower()
    if t == "today":
        return _days(ctx.today, 1, ctx)
    if t == "yesterday":
        return _days(ctx.today - timedelta(days=1), 1, ctx)
    return _days(ctx.today - timedelta(days=2), 1, ctx)


def _resolve_cal(text: str, ctx: _Ctx) -> _Span:
    which, unit = text.lower().split()
    back = which in ("last", "previous")
    monday = ctx.today - timedelta(days=ctx.today.weekday())
    if unit == "week":
        return _days(monday - timedelta(days=7) if back else monday, 7, ctx)
    if unit == "weekend":
        return _days(monday - timedelta(days=2) if back else monday + timedelta(days=5), 2, ctx)
    if unit == "month":
        first = ctx.today.replace(day=1) - relativedelta(months=1 if back else 0)
        return _month_span(first.year, first.month, ctx)
    year = ctx.today.year - (1 if back else 0)
    return _Span(_midnight(date(year, 1, 1), ctx.tz), _midnight(date(year + 1, 1, 1), ctx.tz))


def _resolve_ago(text: str, ctx: _Ctx) -> _Span:
    n = _parse_num(text.lower().rsplit(None, 2)[0])
    return _days(ctx.today - timedelta(days=n), 1, ctx)


def _resolve_date(text: str, ctx: _Ctx) -> _Span:
    """An explicit day ("2026-11-03", "Nov 3", "3rd of November 2026") via dateutil."""
    has_year = re.search(_YEAR, text) is not None
    try:
        parsed = date_parser.parse(text, default=datetime(ctx.today.year, 1, 1))
    except (ValueError, OverflowError) as exc:
        raise _BadDate(text) from exc
    day = parsed.date()
    if not has_year and day > ctx.today:
        day = day - relativedelta(years=1)
    return _days(day, 1, ctx)


def _resolve_weekday(text: str, ctx: _Ctx) -> _Span:
    words = text.lower().split()
    target = _WEEKDAYS.index(words[-1])
    if words[0] == "this":
        day = ctx.today - timedelta(days=ctx.today.weekday() - target)
    else:
        back = (ctx.today.weekday() - target) % 7 or 7
        day = ctx.today - timedelta(days=back)
    return _days(day, 1, ctx, weekday=True)


def _resolve_month(text: str, ctx: _Ctx) -> _Span:
    words = text.lower().rstrip(".").split()
    qualifier = words[0] if words[0] in ("last", "this") else None
    if qualifier:
        words = words[1:]
    month = _MONTHS[words[0]]
    if len(words) > 1:
        year = int(words[1])
    elif qualifier == "this":
        year = ctx.today.year
    elif qualifier == "last":
        year = ctx.today.year if month < ctx.today.month else ctx.today.year - 1
    else:
        year = ctx.today.year if month <= ctx.today.month else ctx.today.year - 1
    return _month_span(year, month, ctx)


def _resolve_year(text: str, ctx: _Ctx) -> _Span:
    year = int(text)
    return _Span(_midnight(date(year, 1, 1), ctx.tz), _midnight(date(year + 1, 1, 1), ctx.tz))


_RESOLVERS: tuple[tuple[re.Pattern[str], Callable[[str, _Ctx], _Span]], ...] = tuple(
    (re.compile(p, _FLAGS), fn)
    for p, fn in (
        (_P_PART_OF_DAY, _resolve_part_of_day),
        (_P_REL_DAY, _resolve_rel_day),
        (_P_CAL, _resolve_cal),
        (_P_AGO, _resolve_ago),
        (_P_ISO, _resolve_date),
        (_P_MD, _resolve_date),
        (_P_DM, _resolve_date),
        (_P_WEEKDAY, _resolve_weekday),
        (_P_MONTH, _resolve_month),
        (_P_YEAR, _resolve_year),
    )
)


def _resolve_period(text: str, ctx: _Ctx) -> _Span:
    """Resolve one period phrase; raises _BadDate, ValueError or OverflowError if it names no real time."""
    for pattern, fn in _RESOLVERS:
        if pattern.fullmatch(text):
            return fn(text, ctx)
    raise ValueError(f"not a period: {text!r}")


# --- combining ------------------------------------------------------------------------------------------


def _between(m: re.Match[str], ctx: _Ctx) -> _Span:
    a = _resolve_period(m.group("a"), ctx)
    b = _resolve_period(m.group("b"), ctx)
    if a.start is None or b.start is None or a.end is None or b.end is None:
        raise ValueError("unbounded period in a range")
    b_start, b_end = b.start, b.end
    if b.weekday and b_start < a.start:  # "between Friday and Monday": the Monday after that Friday
        b_start, b_end = b_start + timedelta(days=7), b_end + timedelta(days=7)
    return _Span(min(a.start, b_start), max(a.end, b_end))


def _prep(m: re.Match[str], ctx: _Ctx) -> _Span:
    a = _resolve_period(m.group("a"), ctx)
    prep = m.group("prep").lower()
    if prep in ("since", "from"):
        return _Span(a.start, None)
    if prep == "after":
        return _Span(a.end, None)
    if prep == "before":
        return _Span(None, a.start)
    if prep in ("until", "till"):
        return _Span(None, a.end)
    return a


def _rolling(m: re.Match[str], ctx: _Ctx) -> _Span:
    unit = m.group("unit").lower()
    num_text = m.group("num")
    rel = m.group("rel").lower()
    n = _parse_num(num_text) if num_text else 1
    key = unit[:2] if unit.startswith("m") else unit[0]  # s, mi, h, d, w, mo, y
    calendar = {"w": "week", "mo": "month", "y": "year"}
    if num_text is None and m.group("the") is None and rel in ("last", "previous") and key in calendar:
        return _resolve_cal(f"last {calendar[key]}", ctx)
    now = ctx.now
    since: datetime
    if key in ("s", "mi", "h", "d", "w"):
        seconds = {"s": 1, "mi": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[key] * n
        if key in ("d", "w"):  # local wall-clock days, so "last 7 days" keeps the hour across DST
            since = now - timedelta(days=seconds // 86400)
        else:  # absolute time: "past 24 hours" is 24 real hours even across a DST change
            since = now.astimezone(UTC) - timedelta(seconds=seconds)
    elif key == "mo":
        since = now - relativedelta(months=n)
    else:
        since = now - relativedelta(years=n)
    return _Span(since, None)


def _bare(m: re.Match[str], ctx: _Ctx) -> _Span:
    return _resolve_period(m.group("a"), ctx)


def _earlier_today(m: re.Match[str], ctx: _Ctx) -> _Span:
    return _days(ctx.today, 1, ctx)


# Tried in this order; at equal start and length the earlier pattern wins.
_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str], _Ctx], _Span]], ...] = (
    (_RE_BETWEEN, _between),
    (_RE_FROM_TO, _between),
    (_RE_ROLLING, _rolling),
    (_RE_EARLIER_TODAY, _earlier_today),
    (_RE_PREP, _prep),
    (_RE_BARE, _bare),
)


_MIN_YEAR, _MAX_YEAR = 2, 9998  # every zone can show these instants; outside them is no real question


def _to_window(span: _Span) -> TimeWindow:
    for end in (span.start, span.end):
        if end is not None and not _MIN_YEAR <= end.year <= _MAX_YEAR:
            raise _BadDate(f"out of range: {end.year}")
    return TimeWindow(
        since=span.start.timestamp() if span.start is not None else None,
        until=span.end.timestamp() if span.end is not None else None,
    )


def scan_window(question: str, *, now: datetime, tz: tzinfo) -> WindowScan:
    """Find the time phrase of ``question`` (see the module docstring for the rules).

    ``now`` is an aware datetime (a naive one is taken to be in ``tz``); ``tz`` is the configured zone,
    e.g. ``zoneinfo.ZoneInfo("Europe/Berlin")``. Returns the leftmost-longest phrase that names a real
    time, and the date-like phrases skipped because they name none. Never raises on any ``question``.
    """
    local_now = now.replace(tzinfo=tz) if now.tzinfo is None else now.astimezone(tz)
    ctx = _Ctx(now=local_now, today=local_now.date(), tz=tz)
    best: tuple[int, int, int, WindowMatch] | None = None
    rejected: list[str] = []
    for priority, (pattern, handler) in enumerate(_PATTERNS):
        failures = 0
        for m in pattern.finditer(question):
            if best is not None and m.start() > best[0]:
                break
            try:
                span = handler(m, ctx)
                window = _to_window(span)
            except (_BadDate, ValueError, OverflowError, KeyError):
                rejected.append(m.group())  # a date-like phrase that names no real, representable time
                failures += 1
            else:
                key = (m.start(), -(m.end() - m.start()), priority)
                if best is None or key < best[:3]:
                    best = (*key, WindowMatch(window, m.group(), m.start(), m.end()))
                break
            if failures >= _MAX_REJECTS_PER_PATTERN:
                break
    match = best[3] if best is not None else None
    unique = list(dict.fromkeys(rejected))
    # keep only the longest of nested rejects ("on 2026-02-30" over "2026-02-30")
    unique = [r for r in unique if not any(r != o and r in o for o in unique)]
    return WindowScan(match, tuple(unique))


def parse_window(question: str, *, now: datetime, tz: tzinfo) -> WindowMatch | None:
    """The time window ``question`` names, relative to ``now`` in zone ``tz``, or ``None``.

    ``window`` is half-open ``[since, until)`` in seconds since the epoch, UTC (``None`` = unbounded);
    ``phrase`` is the matched text, ``question[start:end]``. Never raises on any string; unreal dates
    ("on 2026-02-30") give ``None`` (``scan_window`` also names them).
    """
    return scan_window(question, now=now, tz=tz).match
