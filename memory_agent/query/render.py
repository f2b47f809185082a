"""How answers are written: one line per event, the window and filters in words, and a size budget.

Pure functions of stored events and settings (no I/O). Every answer must fit one mesh payload
(:data:`mesh.constants.DEFAULT_MAX_PAYLOAD`, 1 MiB of UTF-8): an event's line is capped at
:data:`MAX_LINE_CHARS` characters (saying how many fields were cut) and a text answer at
:data:`TEXT_BUDGET` bytes (saying how many events were left out), so an answer listing reports with
tens of thousands of fields is still sent, shortened, instead of failing (issue 14).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from memory_agent.query.text import clip
from memory_agent.types import Filters, StoredEvent, TimeWindow
from mesh.constants import DEFAULT_MAX_PAYLOAD

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_LINE_CHARS",
    "TEXT_BUDGET",
    "Budget",
    "describe",
    "event_line",
    "filters_in_words",
    "plural",
    "when",
    "window_in_words",
]

#: Characters of one payload value shown in an event's line.
MAX_FIELD_CHARS = 240
#: Characters of one event's line; the fields that do not fit are counted, not shown.
MAX_LINE_CHARS = 2_000
#: UTF-8 bytes of a text answer: the mesh's payload limit less room for the closing notes.
TEXT_BUDGET = DEFAULT_MAX_PAYLOAD - 16 * 1024

_HIDDEN_FIELDS = frozenset({"event", "trace_id", "occurred_at"})


def plural(n: int, word: str) -> str:
    """``word`` for 1, else its English plural: ``"es"`` after s, x, z, ch and sh (``matches``), else ``"s"``."""
    if n == 1:
        return word
    return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


def when(seconds: float, tz: tzinfo) -> str:
    """``Fri 2026-11-20 14:02 UTC``: a time as answers show it, in the configured zone."""
    return datetime.fromtimestamp(seconds, tz=tz).strftime("%a %Y-%m-%d %H:%M %Z")


def _field(value: Any) -> str:
    return clip(value if isinstance(value, str) else str(value), MAX_FIELD_CHARS)


def event_line(e: StoredEvent, tz: tzinfo) -> str:
    """``- [#12] Fri 2026-11-20 14:02 UTC, @deploy reported rollback (service: api-gateway, ...), trace t-81``.

    Each payload value is cut to :data:`MAX_FIELD_CHARS` characters and the fields to what fits in
    :data:`MAX_LINE_CHARS` (then ``... and N more fields``). A report's own ``[#12]`` is shown as
    ``[ #12]``: only @memory's citations read ``[#id]`` in an answer.
    """
    head = f"- [#{e.id}] {when(e.occurred_at, tz)}, @{e.from_handle} reported {clip(e.event, MAX_FIELD_CHARS)}"
    tail = f", trace {clip(e.trace_id, MAX_FIELD_CHARS)}"
    room = MAX_LINE_CHARS - len(head) - len(tail) - 40
    shown: list[str] = []
    used = 0
    fields = [(k, v) for k, v in e.payload.items() if k not in _HIDDEN_FIELDS and v is not None]
    for key, value in fields:
        part = f"{clip(str(key), 60)}: {_field(value)}"
        if used + len(part) + 2 > room:
            break
        shown.append(part)
        used += len(part) + 2
    cut = len(fields) - len(shown)
    detail = ", ".join(shown) + (f", ... and {cut} more {plural(cut, 'field')}" if cut else "")
    told = head + (f" ({detail})" if detail else "") + tail
    cite = f"- [#{e.id}]"
    return cite + told[len(cite) :].replace("[#", "[ #")


def _moment(seconds: float, tz: tzinfo, now: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=tz)
    same_year = moment.year == datetime.fromtimestamp(now, tz=tz).year
    return moment.strftime("%a %d %b %H:%M" if same_year else "%a %d %b %Y %H:%M")


def window_in_words(window: TimeWindow, phrase: str | None, *, tz: tzinfo, now: float) -> str:
    """The window as people read it, with its zone: ``this week (Mon 23 Nov 00:00 - now, UTC)``.

    ``phrase`` is the time phrase of the question (``None`` for a structured ``since``/``until``); the
    end is "now" when the window reaches the present. ``now``: seconds since the epoch, UTC.
    """
    zone = getattr(tz, "key", None) or datetime.fromtimestamp(now, tz=tz).strftime("%Z")
    start = "the beginning" if window.since is None else _moment(window.since, tz, now)
    end = "now" if window.until is None or window.until > now else _moment(window.until, tz, now)
    span = f"{start} \u2013 {end}, {zone}"
    return f"{phrase} ({span})" if phrase else f"between {start} and {end} ({zone})"


def filters_in_words(filters: Filters) -> str:
    """``of type rollback for api-gateway reported by @deploy on trace t-81`` (empty when no filter)."""
    parts = []
    if filters.event:
        parts.append("of type " + " or ".join(filters.event))
    if filters.service:
        parts.append("for " + " or ".join(filters.service))
    if filters.from_handle:
        parts.append("reported by " + " or ".join(f"@{h}" for h in filters.from_handle))
    if filters.trace_id:
        parts.append("on trace " + " or ".join(filters.trace_id))
    return " ".join(parts)


def describe(filters: Filters, window: TimeWindow | None, phrase: str | None, *, tz: tzinfo, now: float) -> str:
    """What an answer covers: filters, then the window in words; ``in memory`` when neither."""
    parts = [p for p in (filters_in_words(filters),) if p]
    if window is not None:
        parts.append(window_in_words(window, phrase, tz=tz, now=now))
    return " ".join(parts) if parts else "in memory"


class Budget:
    """Lines of a text answer within :data:`TEXT_BUDGET` UTF-8 bytes (or ``limit``).

    :meth:`add` takes a line if it fits and says so; :attr:`left_out` counts the event lines refused.
    """

    def __init__(self, limit: int = TEXT_BUDGET) -> None:
        self.lines: list[str] = []
        self.left_out = 0
        self._room = limit

    def add(self, line: str) -> bool:
        size = len(line.encode("utf-8")) + 1
        if self.left_out or size > self._room:
            self.left_out += 1
            return False
        self.lines.append(line)
        self._room -= size
        return True

    def extend(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.add(line)

    def note(self, line: str) -> None:
        """A closing line (always kept: the budget leaves room for a few)."""
        self.lines.append(line)

    def text(self) -> str:
        if self.left_out:
            self.lines.append(
                f"... {self.left_out} more {plural(self.left_out, 'event')} not shown: the answer is capped at "
                f"{TEXT_BUDGET // 1024} KiB to fit one mesh message (ask for fewer, or a narrower window)."
            )
        return "\n".join(self.lines)
