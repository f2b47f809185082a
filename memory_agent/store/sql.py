"""SQL built from a question: the ``WHERE`` clause of a time window and filters, and safe FTS5 queries.

Pure functions (no I/O). Times are floats, seconds since the epoch, UTC; windows are half-open
``[since, until)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from memory_agent.query.text import STOPWORDS, tokenize
from memory_agent.types import Filters, TimeWindow

__all__ = ["IN_CHUNK", "chunks", "fts_phrases", "fts_query", "where_clause"]

_MAX_QUERY_TERMS = 32
#: Ids or values per statement for ``IN (...)`` lists; well below SQLITE_MAX_VARIABLE_NUMBER.
IN_CHUNK = 500


def chunks(ids: Sequence[int] | np.ndarray) -> Iterator[list[int]]:
    """``ids`` as lists of at most :data:`IN_CHUNK` ints, for ``IN (...)`` lists."""
    for start in range(0, len(ids), IN_CHUNK):
        yield [int(i) for i in ids[start : start + IN_CHUNK]]


def fts_phrases(text: str) -> list[str]:
    """The FTS5 phrases of free user text, each quoted: ``'api-gateway rolled back'`` -> ``['"api gateway"',
    '"rolled"', '"back"']``.

    Each whitespace-separated chunk becomes one quoted phrase of its word pieces; English stopwords are
    dropped (:data:`memory_agent.query.text.STOPWORDS`); repeats are dropped; at most 32 phrases. Only letters and digits reach FTS5, inside double
    quotes, so FTS5 syntax in a question (``AND OR NEAR( * ^ "``) cannot raise.
    """
    phrases: list[str] = []
    seen: set[str] = set()
    for chunk in text.split():
        pieces = tokenize(chunk)
        if not pieces or all(piece in STOPWORDS for piece in pieces):
            continue
        phrase = pieces[0] if len(pieces) == 1 else " ".join(pieces)
        if phrase not in seen:
            seen.add(phrase)
            phrases.append(f'"{phrase}"')
        if len(phrases) >= _MAX_QUERY_TERMS:
            break
    return phrases


def fts_query(text: str) -> str | None:
    """Turn free user text into a safe FTS5 query (its :func:`fts_phrases` OR-ed), or ``None`` when
    nothing searchable is left."""
    phrases = fts_phrases(text)
    return " OR ".join(phrases) if phrases else None


def where_clause(window: TimeWindow | None, filters: Filters, *, alias: str = "") -> tuple[str, list[Any]]:
    """SQL conditions (joined with AND, ``"1"`` when none) and their parameters for a window + filters.

    The window is half-open (``since <= occurred_at < until``); with ``future_skew`` it also leaves out
    events dated more than that after their receipt. Values within one filter field are OR-ed.
    """
    prefix = f"{alias}." if alias else ""
    conditions: list[str] = []
    params: list[Any] = []
    if window is not None:
        if window.since is not None:
            conditions.append(f"{prefix}occurred_at >= ?")
            params.append(float(window.since))
        if window.until is not None:
            conditions.append(f"{prefix}occurred_at < ?")
            params.append(float(window.until))
        if window.future_skew is not None:
            conditions.append(f"{prefix}occurred_at - {prefix}received_at <= ?")
            params.append(float(window.future_skew))
    for column, values in (
        ("event", filters.event),
        ("service", filters.service),
        ("from_handle", filters.from_handle),
        ("trace_id", filters.trace_id),
    ):
        if values:
            marks = ", ".join("?" for _ in values)
            conditions.append(f"{prefix}{column} IN ({marks})")
            params.extend(values)
    return (" AND ".join(conditions) if conditions else "1"), params


