"""Prompt-ready working context (meshflow's ``context_string``): reports as one line each, within a budget.

Pure. A line reads ``- <time> @<handle> (trace <id>): <text>``, where the text is the report's indexed text
(:func:`memory_agent.wire.indexed_text`: the event kind, then the fields that carry the story), cut to
:data:`MAX_LINE_CHARS`. The latest reports come first, then (for a query) the most relevant ones not listed
already; lines are added while the whole stays within ``max_chars``, so the result never exceeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memory_agent.query.text import clip
from memory_agent.wire import indexed_text

__all__ = ["MAX_LINE_CHARS", "format_context", "report_line"]

#: The most characters one report's line takes.
MAX_LINE_CHARS = 300


def report_line(event: dict[str, Any]) -> str:
    """One report (an event as ``recent`` or a structured answer gives it) as one line."""
    raw = event.get("payload")
    payload: dict[str, Any] = raw if isinstance(raw, dict) else {}
    name = str(event.get("event", ""))
    text = " ".join(indexed_text(name, payload).split())
    line = f"- {event.get('occurred_at', '?')} @{event.get('from_handle', '?')} (trace {event.get('trace_id', '?')}): {text}"
    return clip(line, MAX_LINE_CHARS)


def format_context(latest: Sequence[dict[str, Any]], relevant: Sequence[dict[str, Any]], *, max_chars: int,
                   query: str | None = None) -> str:
    """The working context of at most ``max_chars`` characters; ``""`` when nothing fits or nothing is known."""
    sections: list[tuple[str, list[str]]] = []
    seen: set[Any] = set()
    for title, events in (("Latest reports:", latest),
                          (f"Reports relevant to {clip(query or '', 80)!r}:" if query else "", relevant)):
        lines = []
        for event in events:
            ident = event.get("id", id(event))
            if ident in seen:
                continue
            seen.add(ident)
            lines.append(report_line(event))
        if lines and title:
            sections.append((title, lines))
    out: list[str] = []
    size = 0
    for title, lines in sections:
        for position, line in enumerate(lines):
            addition = ([title] if position == 0 else []) + [line]
            cost = sum(len(part) + 1 for part in addition) - (1 if not out else 0)
            if size + cost > max_chars:
                break
            out.extend(addition)
            size += cost
    return "\n".join(out)
