"""What @memory answers to each message: a mesh ``Message`` in, a :class:`Reply` out. No NATS here.

:class:`Handlers` reads a payload by the wire contract (:func:`memory_agent.wire.classify`) and routes
it: a report to ingest, a question to the answerer, an operation (``stats``, ``forget``) to its
handler. Bad input gets an error reply saying how to fix it; an internal failure gets a short reply
with an error id that the log line also carries (never a Python exception text). Storage errors of a
report propagate, so the daemon leaves the message unacknowledged and it is redelivered.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memory_agent.errors import AccessDenied, QueryError, ReportError, excerpt, internal_error_id
from memory_agent.retention import check_admin, parse_forget
from memory_agent.shared.wire import SHARED_OPERATIONS
from memory_agent.wire import Operation, Question, Report, build_event, classify, error_reply, stored_reply
from mesh import Message

if TYPE_CHECKING:
    from memory_agent.config import Config
    from memory_agent.ingest import Ingestor
    from memory_agent.protocols import Clock
    from memory_agent.query.answer import Answerer
    from memory_agent.retention import Eraser
    from memory_agent.shared.ops import SharedOps

__all__ = ["OPERATIONS", "Handlers", "Reply"]

log = logging.getLogger(__name__)

#: The operations ``{"op": ...}`` @memory serves (shared memory's: :mod:`memory_agent.shared.ops`).
OPERATIONS = ("stats", "forget", *SHARED_OPERATIONS)
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """The payload that resolves a message's session, and its content type."""

    payload: str
    content_type: str = _JSON


def _internal_error(what: str, msg: Message) -> Reply:
    error_id = internal_error_id()
    log.exception("%s %s from @%s failed (error %s)", what, msg.message_id, msg.from_handle, error_id)
    return Reply(error_reply(
        f"internal error while {what} (error id {error_id}); the @memory operator's log has the details"))


class Handlers:
    """Routes each message to @memory by the wire contract; see the module docstring.

    ``stats`` returns the daemon's statistics; ``on_forgotten(count)`` runs after a forget deleted events
    (the daemon saves the index). ``clock`` gives seconds since the epoch, UTC. ``shared`` serves the
    shared-memory operations (``None``: they are answered with an error saying it is off).
    """

    def __init__(
        self,
        config: Config,
        *,
        ingestor: Ingestor,
        answerer: Answerer,
        eraser: Eraser,
        stats: Callable[[], Awaitable[dict[str, Any]]],
        on_forgotten: Callable[[int], Awaitable[None]],
        clock: Clock,
        shared: SharedOps | None = None,
    ) -> None:
        self._config = config
        self._ingestor = ingestor
        self._answerer = answerer
        self._eraser = eraser
        self._stats = stats
        self._on_forgotten = on_forgotten
        self._clock = clock
        self._shared = shared

    async def handle(self, msg: Message) -> Reply | None:
        """The reply to ``msg``, or ``None`` when there is nothing to answer (a session's resolve).

        Raises the storage error of a report that could not be stored (so it is redelivered).
        """
        if msg.message_type == "session_resolve":
            return None
        started = time.perf_counter()
        try:
            request = classify(msg.payload, msg.content_type, tz=self._config.tz)
        except (ReportError, QueryError) as exc:
            log.info("rejected %s from @%s: %s", msg.message_id, msg.from_handle, exc)
            return Reply(error_reply(str(exc)))
        if isinstance(request, Report):
            reply = await self._report(msg, request)
        elif isinstance(request, Question):
            reply = await self._question(msg, request)
        else:
            reply = await self._operation(msg, request)
        log.debug("%s from @%s handled in %.1f ms", type(request).__name__, msg.from_handle,
                  (time.perf_counter() - started) * 1000)
        return reply

    async def _report(self, msg: Message, report: Report) -> Reply:
        try:
            event = build_event(
                report,
                message_id=msg.message_id,
                session=msg.session,
                from_handle=msg.from_handle,
                trace_id=msg.trace_id,
                sent_at=msg.sent_at,
                received_at=self._clock(),
                tz=self._config.tz,
            )
        except ReportError as exc:
            log.info("rejected report %s from @%s: %s", msg.message_id, msg.from_handle, exc)
            return Reply(error_reply(str(exc)))
        except Exception:  # a payload that trips a bug: answer it rather than redeliver it forever
            return _internal_error("reading the report", msg)
        if self._config.security.authenticated_senders:
            event = replace(event, sender_verified=True)
        # Storage errors propagate: the message is not acked and will be redelivered.
        return Reply(stored_reply(await self._ingestor.ingest(event)))

    async def _question(self, msg: Message, question: Question) -> Reply:
        try:
            answer = await self._answerer.answer(question)
        except Exception:  # a question that breaks answering must not be redelivered forever
            return _internal_error("answering", msg)
        if question.structured:
            return Reply(json.dumps(answer.to_json(), ensure_ascii=False))
        return Reply(answer.text, content_type="text/plain")

    async def _operation(self, msg: Message, op: Operation) -> Reply:
        if op.op == "stats":
            return Reply(json.dumps(await self._stats()))
        if op.op == "forget":
            return await self._forget(msg, op)
        if op.op in SHARED_OPERATIONS:
            return await self._shared_op(msg, op)
        return Reply(error_reply(
            f"unknown op {excerpt(op.op)}: the operations are {', '.join(repr(o) for o in OPERATIONS)}"))

    async def _shared_op(self, msg: Message, op: Operation) -> Reply:
        if self._shared is None:
            return Reply(error_reply(f"{op.op}: shared memory is off in this @memory ([shared] enabled = false)"))
        try:
            reply = await self._shared.handle(msg, op.op, op.args)
        except Exception:  # a request that trips a bug is answered, not redelivered forever
            return _internal_error(f"serving {op.op}", msg)
        return Reply(json.dumps(reply, ensure_ascii=False))

    async def _forget(self, msg: Message, op: Operation) -> Reply:
        """Delete events for an admin (see :mod:`memory_agent.retention`); everyone else gets an error."""
        try:
            check_admin(msg.from_handle, self._config.security.admins)
            request = parse_forget(op.args, tz=self._config.tz)
        except AccessDenied as exc:
            log.warning("forget refused: @%s is not an admin (message %s)", msg.from_handle, msg.message_id)
            return Reply(error_reply(str(exc)))
        except QueryError as exc:
            return Reply(error_reply(str(exc)))
        count = await self._eraser.forget(request)  # storage errors propagate: redelivered, then retried
        if count:
            await self._on_forgotten(count)
        log.warning("forget by @%s (%s, by %s): %d events deleted", msg.from_handle,
                    "authenticated" if self._config.security.authenticated_senders else "claimed handle",
                    request.selector, count)
        return Reply(json.dumps({"status": "forgotten", "count": count}))
