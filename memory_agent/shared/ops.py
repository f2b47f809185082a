"""Routes @memory's shared-memory operations (``kv.*``, ``vector.*``, ``outcomes``, ``recent``) to their
owners and turns refusals into error replies. No NATS here beyond what the owners do.

A :class:`~memory_agent.errors.SharedMemoryError` becomes ``{"status": "error", "error", "code", ...}``
(:func:`memory_agent.shared.wire.error_payload`); anything else propagates to
:class:`memory_agent.handlers.Handlers`, which answers with an error id and logs the traceback.
"""

from __future__ import annotations

import logging
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_agent.errors import SharedMemoryError
from memory_agent.query.answer import Answer, ScoredEvent
from memory_agent.shared.outcomes import outcome_stats
from memory_agent.shared.requests import parse_kv, parse_outcomes, parse_recent, parse_vector
from memory_agent.shared.wire import KV_OPERATIONS, SHARED_OPERATIONS, VECTOR_OPERATIONS, error_payload, ok
from memory_agent.types import Filters
from memory_agent.wire import parse_time
from mesh import Message

if TYPE_CHECKING:
    from memory_agent.shared.service import SharedState
    from memory_agent.shared.vectors import VectorMemory
    from memory_agent.store.events import EventStore

__all__ = ["SHARED_OPERATIONS", "SharedOps"]

log = logging.getLogger(__name__)


class SharedOps:
    """What answers the shared-memory operations: ``state`` (kv), ``vectors``, and the event ``store`` (at
    ``db_path``) for ``outcomes`` and ``recent``. ``tz`` reads naive ISO times in ``since``."""

    def __init__(self, *, state: SharedState, vectors: VectorMemory, store: EventStore, db_path: Path,
                 tz: tzinfo) -> None:
        self._state = state
        self._vectors = vectors
        self._store = store
        self._db_path = db_path
        self._tz = tz

    async def handle(self, msg: Message, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The reply to ``{"op": op, **args}`` from ``msg``'s sender."""
        try:
            if op in KV_OPERATIONS:
                return await self._state.handle(msg, parse_kv(op, args))
            if op in VECTOR_OPERATIONS:
                return await self._vector(msg, op, args)
            if op == "outcomes":
                since = None if args.get("since") is None else parse_time(args["since"], "since", tz=self._tz,
                                                                          error=SharedMemoryError)
                stats = await outcome_stats(self._db_path, parse_outcomes(args, since=since))
                return ok(nodes=[s.to_json() for s in stats])
            if op == "recent":
                return await self._recent(args)
        except SharedMemoryError as exc:
            log.info("%s from @%s refused (%s): %s", op, msg.from_handle, exc.code, exc)
            return error_payload(exc)
        raise ValueError(f"not a shared-memory operation: {op!r}")

    async def _vector(self, msg: Message, op: str, args: dict[str, Any]) -> dict[str, Any]:
        request = parse_vector(op, args)
        if op == "vector.set":
            return ok(**await self._vectors.set(request, by=msg.from_handle))
        if op == "vector.delete":
            return ok(deleted=await self._vectors.delete(request), namespace=request.namespace, key=request.key)
        hits = await self._vectors.search(request)
        return ok(namespace=request.namespace, results=[h.to_json() for h in hits])

    async def _recent(self, args: dict[str, Any]) -> dict[str, Any]:
        request = parse_recent(args)
        filters = Filters(from_handle=(request.handle,) if request.handle else (),
                          trace_id=(request.trace_id,) if request.trace_id else ())
        events = await self._store.select(None, filters, limit=request.n, order="desc")
        listed = Answer(text="", events=tuple(ScoredEvent(e, 0.0) for e in events), window=None,
                        intent="list").to_json()["events"]
        for event in listed:
            event.pop("score", None)
        return ok(events=listed)
