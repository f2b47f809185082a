"""What @memory answers to each message: a mesh ``Message`` in, a :class:`Reply` out. No NATS here.

:class:`Handlers` reads a payload by the wire contract (:func:`memory_agent.wire.classify`) and routes
it: a report to the acceptance step (:class:`memory_agent.protocols.Acceptor`), a question to the
answerer, an operation (``stats``, ``forget``) to its handler. Routing reads the payload only, never
the subject or lane it came on, so a question answers the same whichever way it arrives. Bad input gets
an error reply saying how to fix it; an internal failure gets a short reply with an error id that the
log line also carries (never a Python exception text). A report that storage cannot take right now
stays unacknowledged (:func:`leave_unacknowledged`, the one place that decides how) until it can.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memory_agent.errors import (
    AccessDenied,
    IngestClosed,
    QueryError,
    ReportError,
    ReportRefused,
    StorageLost,
    StorageUnavailable,
    excerpt,
    internal_error_id,
)
from memory_agent.health import retry_delay
from memory_agent.retention import check_admin, parse_forget
from memory_agent.wire import Operation, Question, Report, build_event, classify, error_reply, stored_reply
from mesh import Message

if TYPE_CHECKING:
    from memory_agent.config import Config
    from memory_agent.protocols import Acceptor, Clock
    from memory_agent.query.answer import Answerer
    from memory_agent.retention import Eraser

__all__ = ["OPERATIONS", "Handlers", "Reply", "leave_unacknowledged"]

log = logging.getLogger(__name__)

#: The operations ``{"op": ...}`` @memory serves.
OPERATIONS = ("stats", "forget")
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


async def leave_unacknowledged(msg: Message, exc: Exception, attempt: int, *, cap: float) -> None:
    """The one place that keeps a message unacknowledged for a later try, without an error reply and
    without using up its deliveries: storage is unavailable, or gone (``exc``), the report is not bad.

    The mesh has no way yet for a handler to ask for a redelivery that does not count towards
    ``max_deliver``, so the handler keeps the message: it waits here (the mesh's dispatcher keeps
    sending in-progress acks, so JetStream neither redelivers nor terminates it) and the caller then
    tries again. The wait grows with ``attempt`` up to ``cap`` seconds (:func:`memory_agent.health.retry_delay`).
    With the mesh's ``Retry`` (a handler exception meaning "nak with this delay, not counted as a
    failed delivery"), this body becomes ``raise Retry(delay=retry_delay(attempt, cap=cap))``.
    After ``StorageLost`` the daemon is stopping: the wait ends when the mesh's drain cancels the
    handler (the message is nak'ed, one delivery spent, and goes to the next daemon). ``IngestClosed``
    is raised on (nak).
    """
    if isinstance(exc, IngestClosed):
        raise exc
    delay = retry_delay(attempt, cap=cap)
    # The outage itself is logged once (memory_agent.health.Outage); a line per report would flood the log.
    log.debug("report %s from @%s kept unacknowledged (%s); trying again in %.2f s", msg.message_id,
              msg.from_handle, type(exc).__name__, delay)
    await asyncio.sleep(delay)


class Handlers:
    """Routes each message to @memory by the wire contract; see the module docstring.

    ``stats`` returns the daemon's statistics; ``on_forgotten(count)`` runs after a forget deleted events
    (the daemon saves the index). ``clock`` gives seconds since the epoch, UTC.
    """

    def __init__(
        self,
        config: Config,
        *,
        acceptor: Acceptor,
        answerer: Answerer,
        eraser: Eraser,
        stats: Callable[[], Awaitable[dict[str, Any]]],
        on_forgotten: Callable[[int], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._config = config
        self._acceptor = acceptor
        self._answerer = answerer
        self._eraser = eraser
        self._stats = stats
        self._on_forgotten = on_forgotten
        self._clock = clock

    async def handle(self, msg: Message) -> Reply | None:
        """The reply to ``msg``, or ``None`` when there is nothing to answer (a session's resolve).

        A report returns once accepted (or refused); while storage is unavailable it waits (see
        :func:`leave_unacknowledged`). Raises ``StorageLost``/``IngestClosed`` (not acknowledged).
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
        attempt = 0
        while True:
            try:
                return Reply(stored_reply(await self._acceptor.accept(event)))
            except ReportRefused as exc:
                return Reply(error_reply(str(exc)))
            except (StorageUnavailable, StorageLost, IngestClosed) as exc:
                await leave_unacknowledged(msg, exc, attempt, cap=self._config.ingest.retry_max_delay)
                attempt += 1

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
        return Reply(error_reply(
            f"unknown op {excerpt(op.op)}: the operations are {', '.join(repr(o) for o in OPERATIONS)}"))

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
