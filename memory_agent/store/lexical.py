"""Full-text (BM25) search over the events' text, with what calibrates its scores.

:class:`LexicalSearch` is the part of :class:`memory_agent.store.EventStore` that queries the FTS5 table
(``porter unicode61`` over ``events.text``); it runs on the store's connection. Besides the hits it says
how strong they are: how many of the question's phrases each holds and the sum of their IDFs, so that
:mod:`memory_agent.query.retrieval` can put a BM25 score on the same 0..1 scale for every question.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memory_agent.query.text import tokenize
from memory_agent.store.filter_columns import in_sorted
from memory_agent.store.sql import fts_phrases, where_clause
from memory_agent.types import Filters, TimeWindow

__all__ = ["LexicalHits", "LexicalSearch", "bm25_idf"]


def bm25_idf(df: int, total: int) -> float:
    """The IDF FTS5's ``bm25()`` gives a phrase held by ``df`` of ``total`` events:
    ``ln((N - df + 0.5) / (df + 0.5))``, at least 1e-6 (SQLite ``ext/fts5/fts5_aux.c``)."""
    return max(math.log((total - df + 0.5) / (df + 0.5)), 1e-6)


@dataclass(frozen=True, slots=True)
class LexicalHits:
    """BM25 hits and what calibrates them.

    ``hits``: ``(id, -bm25())`` best first. ``phrases``: the question's searched phrases (those too common
    to rank under ``fts_max_docs`` are not counted; those no event holds are). ``bound``: the sum of the
    searched phrases' BM25 IDFs, what an event holding each of them once at average length would score.
    ``matched``: for each hit, how many of the searched phrases it holds.
    """

    hits: list[tuple[int, float]]
    phrases: int
    bound: float
    matched: dict[int, int]


class LexicalSearch:
    """BM25 search; mixed into :class:`memory_agent.store.EventStore`."""

    fts_max_docs: int

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _event_count(self) -> int:
        raise NotImplementedError

    async def fts_search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Full-text search: ``(id, score)`` best first, score = ``-bm25()`` (higher is better); see
        :meth:`lexical_search`, which also says how strong the hits are."""
        return (await self.lexical_search(text, window, filters, limit=limit, allowed=allowed)).hits

    async def lexical_search(
        self, text: str, window: TimeWindow | None, filters: Filters, *, limit: int, allowed: np.ndarray | None = None
    ) -> LexicalHits:
        """BM25 search with what calibrates its scores (:class:`LexicalHits`).

        ``text`` is free user text (see :func:`memory_agent.store.sql.fts_phrases`); window and filters are
        applied in the same SQL, or, given ``allowed`` (the ids they select, ascending int64, as
        :meth:`EventStore.candidate_ids` gives them), by those ids in memory, which reads no event row (a
        join reads one per match: a disk read each when not cached). FTS5 scores every event that contains
        a query word (a cost per event, docs/benchmarks.md#design-scan-costs), so the words are taken rarest
        first while the events containing them add up to at most ``fts_max_docs``; more common words are
        left out like stopwords (their BM25 IDF is the lowest). Counting is cheap (doclist scans, capped).
        No hits when no searchable word is left or ``limit`` <= 0.
        """
        phrases = fts_phrases(text)
        if not phrases or limit <= 0:
            return LexicalHits([], 0, 0.0, {})
        kept, df = await self._rare_phrases(phrases)
        total = await self._event_count()
        # Searched phrases: those ranked, and those no event holds (they count against every event).
        searched = [p for p in phrases if p in kept or df.get(p, 0) == 0]
        bound = sum(bm25_idf(df.get(p, 0), total) for p in searched)
        matching = [p for p in kept if df.get(p, 0) > 0]
        if not matching:
            return LexicalHits([], len(searched), bound, {})
        query = " OR ".join(matching)
        ranked = "SELECT rowid, bm25(events_fts) AS rank FROM events_fts WHERE events_fts MATCH ? ORDER BY rank, rowid"
        if allowed is not None:
            # Every match is ranked anyway (at most fts_max_docs of them); the allowed ones are kept in order.
            ordered = await self._fetchall(ranked, [query])
            rows = [row for row, inside in zip(ordered, in_sorted([r[0] for r in ordered], allowed), strict=True)
                    if inside][: int(limit)]
        elif window is None and filters.is_empty():
            rows = await self._fetchall(f"{ranked} LIMIT ?", [query, int(limit)])
        else:
            where, extra = where_clause(window, filters, alias="e")
            sql = (
                "SELECT e.id, bm25(events_fts) AS rank FROM events_fts "
                "JOIN events AS e ON e.id = events_fts.rowid "
                f"WHERE events_fts MATCH ? AND {where} ORDER BY rank, e.id LIMIT ?"
            )
            rows = await self._fetchall(sql, [query, *extra, int(limit)])
        hits = [(int(r[0]), -float(r[1])) for r in rows]
        matched = {doc: 1 for doc, _ in hits}
        if len(matching) > 1 and hits:
            # How many of the phrases each hit holds: one pass over the doclists already capped above.
            # "+doc": the IN list is tested on the rows the doclists yield; pushed down into FTS5 it became
            # a doclist lookup per hit and phrase (5-10 ms for 100 hits at a million events, 0.5 ms so).
            union = " UNION ALL ".join("SELECT rowid AS doc FROM events_fts WHERE events_fts MATCH ?" for _ in matching)
            ids = [doc for doc, _ in hits]
            counted = await self._fetchall(
                f"SELECT doc, count(*) FROM ({union}) WHERE +doc IN ({', '.join('?' for _ in ids)}) GROUP BY doc",
                [*matching, *ids],
            )
            matched.update((int(r[0]), int(r[1])) for r in counted)
        return LexicalHits(hits, len(searched), bound, matched)

    async def _rare_phrases(self, phrases: list[str]) -> tuple[list[str], dict[str, int]]:
        """The phrases to rank (rarest first, while the events containing them add up to ``fts_max_docs``)
        and each phrase's document frequency, counted up to ``fts_max_docs + 1``."""
        cap = self.fts_max_docs
        counts = ", ".join(
            "(SELECT count(*) FROM (SELECT 1 FROM events_fts WHERE events_fts MATCH ? LIMIT ?))" for _ in phrases
        )
        args: list[Any] = []
        for phrase in phrases:
            args += [phrase, cap + 1]
        docs = (await self._fetchall(f"SELECT {counts}", args))[0]
        df = {phrase: int(n) for phrase, n in zip(phrases, docs, strict=True)}
        kept: list[str] = []
        total = 0
        for n, phrase in sorted(zip(docs, phrases, strict=True), key=lambda pair: pair[0]):
            if n == 0:
                continue
            if total + n > cap:
                break
            kept.append(phrase)
            total += n
        return kept, df

    async def mentions(self, words: str) -> bool:
        """Does any stored event's text hold ``words`` as one phrase (FTS5, so ``"geo-router"`` is the
        phrase "geo router")? One doclist lookup."""
        phrase = " ".join(tokenize(words))
        if not phrase:
            return False
        rows = await self._fetchall("SELECT 1 FROM events_fts WHERE events_fts MATCH ? LIMIT 1", (f'"{phrase}"',))
        return bool(rows)
