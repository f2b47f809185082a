"""The timeline page's read-only JSON API: search, a trace's timeline, events per type per day.

Every request is read with the wire contract's own rules (:func:`memory_agent.wire.classify` for a
question, :func:`memory_agent.wire.parse_time` for times), so the page accepts exactly what an agent
may send. Bad parameters get ``400 {"status": "error", "error": "..."}`` saying how to fix them.

* ``GET /api/search?q=&since=&until=&event=&service=&from_handle=&trace_id=&limit=``: with ``q``, the
  question answered as a structured question (``mode`` auto: "how many ...", "timeline of ..." work as
  on the mesh), ``{"answer", "events", "window", "total"}``; without ``q``, the newest events in the
  window and filters, ``{"answer": null, "events", "window", "total"}``. Filter values may be
  comma-separated. ``since``/``until``: ISO-8601 or unix seconds.
* ``GET /api/timeline?trace_id=``: every event of the trace in time order, ``{"trace_id", "events", "total"}``.
* ``GET /api/daily?since=&until=&<filters>``: ``{"days": ["2026-11-20", ...], "series": {"rollback":
  [0, 2, ...], ...}}``, UTC days, the last 14 days when no window is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from memory_agent.errors import QueryError, ReportError
from memory_agent.query.answer import event_json
from memory_agent.types import Filters, TimeWindow
from memory_agent.wire import MAX_LIMIT, Question, classify, iso_utc, parse_time

if TYPE_CHECKING:
    from memory_agent.config import Config
    from memory_agent.query.answer import Answerer
    from memory_agent.store.events import EventStore

__all__ = ["DEFAULT_DAYS", "FILTER_PARAMS", "PageApi", "PageSource"]

#: Query parameters that filter, as in a structured question's ``filters``.
FILTER_PARAMS = ("event", "service", "from_handle", "trace_id")
#: The chart's window when the request gives none, days.
DEFAULT_DAYS = 14
_DAY = 86_400
_DEFAULT_LIMIT = 50
_MAX_DAYS = 366


class PageSource(Protocol):
    """What the API reads: the daemon's config, open store and answerer (see :class:`MemoryDaemon`)."""

    config: Config

    @property
    def store(self) -> EventStore: ...

    @property
    def answerer(self) -> Answerer: ...


def _values(params: Mapping[str, str], name: str) -> list[str]:
    raw = params.get(name, "")
    return [v.strip() for v in raw.split(",") if v.strip()]


class PageApi:
    """The API's handlers as plain coroutines (``params`` in, JSON-ready dict out); raises ``QueryError``
    for bad parameters. ``clock()``: seconds since the epoch, UTC."""

    def __init__(self, source: PageSource, *, clock: Any) -> None:
        self._source = source
        self._clock = clock

    def _filters(self, params: Mapping[str, str]) -> dict[str, list[str]]:
        return {name: _values(params, name) for name in FILTER_PARAMS if _values(params, name)}

    def _window(self, params: Mapping[str, str]) -> TimeWindow | None:
        tz = self._source.config.tz
        since = parse_time(params["since"], "since", tz=tz, error=QueryError) if params.get("since") else None
        until = parse_time(params["until"], "until", tz=tz, error=QueryError) if params.get("until") else None
        if since is not None and until is not None and since >= until:
            raise QueryError('"since" must be earlier than "until"', field="since")
        return None if since is None and until is None else TimeWindow(since, until)

    @staticmethod
    def _limit(params: Mapping[str, str]) -> int:
        raw = params.get("limit", "")
        if not raw:
            return _DEFAULT_LIMIT
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise QueryError(f'"limit" must be a whole number from 1 to {MAX_LIMIT}', field="limit")
        return int(raw)

    async def search(self, params: Mapping[str, str]) -> dict[str, Any]:
        filters = self._filters(params)
        limit = self._limit(params)
        text = params.get("q", "").strip()
        if text:
            request: dict[str, Any] = {"query": text, "limit": limit, "filters": filters}
            for bound in ("since", "until"):
                if params.get(bound):
                    value = params[bound]
                    request[bound] = float(value) if value.replace(".", "", 1).isdigit() else value
            try:
                question = classify(json.dumps(request), "application/json", tz=self._source.config.tz)
            except ReportError as exc:  # cannot happen for a dict with "query"; kept for the type checker
                raise QueryError(str(exc)) from None
            assert isinstance(question, Question)
            answer = await self._source.answerer.answer(question)
            body = answer.to_json()
            body["total"] = len(answer.events) if answer.total is None else answer.total
            body["intent"] = answer.intent
            return body
        window = self._window(params)
        chosen = Filters(**{k: tuple(v) for k, v in filters.items()})
        store = self._source.store
        rows = await store.select(window, chosen, limit=limit, order="desc")
        total = await store.count(window, chosen)
        return {
            "answer": None,
            "intent": "list",
            "events": [event_json(e, 1.0) for e in rows],
            "window": None if window is None else {
                "since": None if window.since is None else iso_utc(window.since),
                "until": None if window.until is None else iso_utc(window.until),
            },
            "total": total,
        }

    async def timeline(self, params: Mapping[str, str]) -> dict[str, Any]:
        trace = params.get("trace_id", "").strip()
        if not trace:
            raise QueryError('give "trace_id", e.g. /api/timeline?trace_id=t-81', field="trace_id")
        store = self._source.store
        chosen = Filters(trace_id=(trace,))
        rows = await store.select(None, chosen, limit=self._source.config.retrieval.max_list, order="asc")
        return {"trace_id": trace, "events": [event_json(e, 1.0) for e in rows],
                "total": await store.count(None, chosen)}

    async def daily(self, params: Mapping[str, str]) -> dict[str, Any]:
        window = self._window(params) or TimeWindow(since=self._clock() - DEFAULT_DAYS * _DAY, until=None)
        chosen = Filters(**{k: tuple(v) for k, v in self._filters(params).items()})
        rows = await self._source.store.daily_counts(window, chosen)
        first = int(window.since // _DAY) if window.since is not None else (rows[0][1] if rows else None)
        last = int((window.until if window.until is not None else self._clock()) // _DAY)
        if first is None:
            return {"days": [], "series": {}}
        first = max(first, last - _MAX_DAYS + 1)
        days = list(range(first, last + 1))
        series: dict[str, list[int]] = {}
        for event, day, n in rows:
            if first <= day <= last:
                series.setdefault(event, [0] * len(days))[day - first] += n
        return {"days": [datetime.fromtimestamp(d * _DAY, tz=UTC).strftime("%Y-%m-%d") for d in days],
                "series": series}
