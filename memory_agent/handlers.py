"""What @memory answers to each message: a mesh ``Message`` in, a :class:`Reply` out. No NATS here.

:class:`Handlers` reads a payload by the wire contract (:func:`memory_agent.wire.classify`) and routes
it: a report to the acceptance step (:class:`memory_agent.protocols.Acceptor`), a question to the
answerer, an operation (``stats``, ``forget``, shared memory's ``kv.*``/``vector.*``) to its handler.
Routing reads the payload only, never the subject or lane it came on, so a question answers the same
whichever way it arrives. A ``RoomEvent`` (@memory is a member of a room: it was invited, it never joins
by itself) is stored as a report (:func:`memory_agent.wire.room_report`) and needs no reply. Bad input
gets an error reply saying how to fix it; an internal failure gets a short reply with an error id that
the log line also carries (never a Python exception text). A report that storage cannot take right now
stays unacknowledged (:func:`leave_unacknowledged`, the one place that decides how) until it can.

Every report stored or rejected and every question answered or refused gets one INFO line (message id,
sender, result, intent, window, result count, milliseconds; never payload text), with the same values as
structured fields for ``--log-format json``, and one :class:`Outcome` passed to ``observe`` (the daemon's
metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from memory_agent.errors import (
    AccessDenied,
    IngestClosed,
    MemoryAgentError,
    QueryError,
    ReportError,
    ReportRefused,
    StorageLost,
    StorageUnavailable,
    excerpt,
    internal_error_id,
)
from memory_agent.health import retry_delay
from memory_agent.query.text import clip
from memory_agent.retention import check_admin, parse_forget
from memory_agent.shared.wire import SHARED_OPERATIONS
from memory_agent.wire import (
    ROOM_EVENTS_KEPT,
    Operation,
    Question,
    Report,
    build_event,
    classify,
    error_reply,
    iso_utc,
    room_report,
    stored_reply,
)
from mesh import Message, RoomEvent

if TYPE_CHECKING:
    from memory_agent.config import Config
    from memory_agent.protocols import Acceptor, Clock, Forgetter, Replica
    from memory_agent.query.answer import Answer, Answerer
    from memory_agent.shared.ops import SharedOps
    from memory_agent.types import InsertResult, NewEvent, TimeWindow

__all__ = ["OPERATIONS", "Handlers", "Outcome", "Reply", "leave_unacknowledged"]

log = logging.getLogger(__name__)

#: The operations ``{"op": ...}`` @memory serves (shared memory's: :mod:`memory_agent.shared.ops`).
OPERATIONS = ("stats", "forget", *SHARED_OPERATIONS)
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """The payload that resolves a message's session, and its content type."""

    payload: str
    content_type: str = _JSON


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message, for metrics: never ids, handles or payloads (unbounded label values).

    ``kind``: what the message was. ``result``: a report is ``stored``, ``duplicate``, ``rejected`` (bad
    input, answered with an error) or ``failed`` (storage error: redelivered); a question is
    ``answered``, ``rejected`` or ``failed`` (internal error); an operation ``ok`` or ``rejected``.
    ``intent``: a question's (list, count, timeline, why, search), ``none`` when it was not understood;
    an operation's name when it is a known one. ``seconds``: time spent handling it.
    """

    kind: Literal["report", "question", "operation"]
    result: str
    seconds: float
    intent: str = "none"


def _describe_window(window: TimeWindow | None) -> str:
    """``2026-11-14T10:00:00Z..now``, ``..2026-11-01T00:00:00Z``, or ``any`` (no window)."""
    if window is None:
        return "any"
    since = "" if window.since is None else iso_utc(window.since)
    until = "now" if window.until is None else iso_utc(window.until)
    return f"{since}..{until}"


def _rejection(exc: MemoryAgentError) -> str:
    """What was wrong, without quoting the input: the error kind and the field at fault."""
    field = getattr(exc, "field", None)
    return type(exc).__name__ + (f" on {field!r}" if field else "")


def _internal_error(what: str, msg: Message) -> Reply:
    error_id = internal_error_id()
    log.exception("%s %s from @%s failed (error %s)", what, msg.message_id, msg.from_handle, error_id)
    return Reply(error_reply(
        f"internal error while {what} (error id {error_id}); the @memory operator's log has the details"))


async def leave_unacknowledged(message_id: str, sender: str, exc: Exception, attempt: int, *, cap: float) -> None:
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
    log.debug("report %s from @%s kept unacknowledged (%s); trying again in %.2f s", message_id, sender,
              type(exc).__name__, delay)
    await asyncio.sleep(delay)


class Handlers:
    """Routes each message to @memory by the wire contract; see the module docstring.

    ``stats`` returns the daemon's statistics; ``on_forgotten(count)`` runs after a forget deleted events
    (the daemon saves the index). ``clock`` gives seconds since the epoch, UTC. ``shared`` serves the
    shared-memory operations (``None``: they are answered with an error saying it is off). ``replica``
    (a cluster replica, :mod:`memory_agent.cluster`): questions wait for their ``min_seq``, and structured
    answers say how far the replica has applied the events stream (``applied_seq``, ``lag``).
    """

    def __init__(
        self,
        config: Config,
        *,
        acceptor: Acceptor,
        answerer: Answerer,
        eraser: Forgetter,
        stats: Callable[[], Awaitable[dict[str, Any]]],
        on_forgotten: Callable[[int], Awaitable[None]],
        clock: Clock,
        observe: Callable[[Outcome], None] | None = None,
        shared: SharedOps | None = None,
        replica: Replica | None = None,
    ) -> None:
        self._config = config
        self._acceptor = acceptor
        self._answerer = answerer
        self._eraser = eraser
        self._stats = stats
        self._on_forgotten = on_forgotten
        self._clock = clock
        self._observe = observe
        self._shared = shared
        self._replica = replica

    def _done(self, outcome: Outcome) -> None:
        if self._observe is not None:
            self._observe(outcome)

    async def handle(self, msg: Message | RoomEvent) -> Reply | None:
        """The reply to ``msg``, or ``None`` when there is nothing to answer (a session's resolve, a room
        event).

        A report returns once accepted (or refused); while storage is unavailable it waits (see
        :func:`leave_unacknowledged`). Raises ``StorageLost``/``IngestClosed`` (not acknowledged).
        """
        if isinstance(msg, RoomEvent):
            await self._room_event(msg)
            return None
        if msg.message_type == "session_resolve":
            return None
        started = time.perf_counter()
        try:
            request = classify(msg.payload, msg.content_type, tz=self._config.tz)
        except (ReportError, QueryError) as exc:
            kind: Literal["report", "question"] = "question" if isinstance(exc, QueryError) else "report"
            self._rejected(kind, msg, exc, started)
            return Reply(error_reply(str(exc)))
        if isinstance(request, Report):
            return await self._report(msg, request, started)
        if isinstance(request, Question):
            return await self._question(msg, request, started)
        reply, result = await self._operation(msg, request)
        seconds = time.perf_counter() - started
        known = request.op if request.op in OPERATIONS else "unknown"
        self._done(Outcome("operation", result, seconds, intent=known))
        log.debug("operation %s from @%s: %s in %.1f ms", known, msg.from_handle, result, seconds * 1000)
        return reply

    def _rejected(self, kind: Literal["report", "question"], msg: Message, exc: MemoryAgentError,
                  started: float) -> None:
        seconds = time.perf_counter() - started
        self._done(Outcome(kind, "rejected", seconds))
        why = _rejection(exc)
        log.info("%s %s from @%s rejected (%s) in %.1f ms", kind, msg.message_id, msg.from_handle, why,
                 seconds * 1000, extra={"kind": kind, "message_id": msg.message_id, "sender": msg.from_handle,
                                        "result": "rejected", "reason": why,
                                        "duration_ms": round(seconds * 1000, 2)})

    async def _report(self, msg: Message, report: Report, started: float) -> Reply:
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
            self._rejected("report", msg, exc, started)
            return Reply(error_reply(str(exc)))
        except Exception:  # a payload that trips a bug: answer it rather than redeliver it forever
            self._done(Outcome("report", "failed", time.perf_counter() - started))
            return _internal_error("reading the report", msg)
        if self._config.security.authenticated_senders:
            event = replace(event, sender_verified=True)
        try:
            result = await self._accept(event, msg.message_id, msg.from_handle)
        except ReportRefused as exc:
            self._rejected("report", msg, exc, started)
            return Reply(error_reply(str(exc)))
        except BaseException:
            # StorageLost / IngestClosed / cancellation: the message is not acked and will be redelivered.
            self._done(Outcome("report", "failed", time.perf_counter() - started))
            raise
        seconds = time.perf_counter() - started
        outcome = "duplicate" if result.duplicate else "stored"
        self._done(Outcome("report", outcome, seconds))
        log.info("report %s from @%s %s as #%d (trace %s) in %.1f ms", msg.message_id, msg.from_handle, outcome,
                 result.id, event.trace_id, seconds * 1000,
                 extra={"kind": "report", "message_id": msg.message_id, "sender": msg.from_handle,
                        "result": outcome, "event_id": result.id, "trace_id": event.trace_id,
                        "duration_ms": round(seconds * 1000, 2)})
        return Reply(stored_reply(result))

    async def _accept(self, event: NewEvent, message_id: str, sender: str) -> InsertResult:
        """``acceptor.accept(event)``, waiting (unacknowledged) while storage is unavailable; raises
        ``ReportRefused``, ``StorageLost``, ``IngestClosed``."""
        attempt = 0
        while True:
            try:
                return await self._acceptor.accept(event)
            except (StorageUnavailable, StorageLost, IngestClosed) as exc:
                await leave_unacknowledged(message_id, sender, exc, attempt, cap=self._config.ingest.retry_max_delay)
                attempt += 1

    async def _room_event(self, msg: RoomEvent) -> None:
        """Store a room's posted message (or its closing) as a report; log being invited."""
        if msg.event_type == "member_joined" and msg.subject_handle == self._config.handle:
            log.info("invited to room %s (%s) by @%s", msg.room_id, clip(msg.title, 80), msg.sender_handle)
        if msg.event_type not in ROOM_EVENTS_KEPT:
            return
        started = time.perf_counter()
        try:
            event = build_event(
                room_report(msg), message_id=msg.event_id, session=msg.room_id, from_handle=msg.sender_handle,
                trace_id=msg.trace_id or msg.room_id, sent_at=msg.sent_at, received_at=self._clock(),
                tz=self._config.tz,
            )
        except ReportError as exc:
            self._done(Outcome("report", "rejected", time.perf_counter() - started))
            log.warning("room %s event %s from @%s not stored: %s", msg.room_id, msg.room_seq, msg.sender_handle, exc)
            return
        if self._config.security.authenticated_senders:  # the poster is in the subject the server allowed
            event = replace(event, sender_verified=True)
        try:
            result = await self._accept(event, msg.event_id, msg.sender_handle)
        except ReportRefused as exc:
            self._done(Outcome("report", "rejected", time.perf_counter() - started))
            log.warning("room %s event %s from @%s not stored: %s", msg.room_id, msg.room_seq, msg.sender_handle, exc)
            return
        except BaseException:  # StorageLost / IngestClosed: not acked, redelivered
            self._done(Outcome("report", "failed", time.perf_counter() - started))
            raise
        seconds = time.perf_counter() - started
        self._done(Outcome("report", "duplicate" if result.duplicate else "stored", seconds))
        log.info("room %s event %s from @%s stored as #%d%s in %.1f ms", msg.room_id, msg.room_seq,
                 msg.sender_handle, result.id, " (duplicate)" if result.duplicate else "", seconds * 1000)

    async def _question(self, msg: Message, question: Question, started: float) -> Reply:
        replica = self._replica
        caught_up = True
        if replica is not None and question.min_seq is not None:
            caught_up = await replica.wait_applied(question.min_seq, self._config.cluster.read_wait)
        try:
            answer = await self._answerer.answer(question)
        except Exception:  # a question that breaks answering must not be redelivered forever
            self._done(Outcome("question", "failed", time.perf_counter() - started))
            return _internal_error("answering", msg)
        seconds = time.perf_counter() - started
        self._done(Outcome("question", "answered", seconds, intent=answer.intent))
        self._log_answer(msg, answer, seconds)
        if question.structured:
            body = answer.to_json()
            if replica is not None:
                body.update(applied_seq=replica.applied_seq, lag=replica.lag)
                if question.min_seq is not None:
                    body["caught_up"] = caught_up  # False: the answer may miss events up to min_seq
            return Reply(json.dumps(body, ensure_ascii=False))
        return Reply(answer.text, content_type="text/plain")

    @staticmethod
    def _log_answer(msg: Message, answer: Answer, seconds: float) -> None:
        window = _describe_window(answer.window)
        total = len(answer.events) if answer.total is None else answer.total
        log.info("question %s from @%s answered: %s, window %s, %d result(s) in %.1f ms", msg.message_id,
                 msg.from_handle, answer.intent, window, total, seconds * 1000,
                 extra={"kind": "question", "message_id": msg.message_id, "sender": msg.from_handle,
                        "result": "answered", "intent": answer.intent, "window": window, "results": total,
                        "duration_ms": round(seconds * 1000, 2)})

    async def _operation(self, msg: Message, op: Operation) -> tuple[Reply, str]:
        if op.op == "stats":
            return Reply(json.dumps(await self._stats())), "ok"
        if op.op == "forget":
            return await self._forget(msg, op)
        if op.op in SHARED_OPERATIONS:
            reply = await self._shared_op(msg, op)
            return reply, "rejected" if json.loads(reply.payload).get("status") == "error" else "ok"
        return Reply(error_reply(
            f"unknown op {excerpt(op.op)}: the operations are {', '.join(repr(o) for o in OPERATIONS)}")), "rejected"

    async def _shared_op(self, msg: Message, op: Operation) -> Reply:
        if self._shared is None:
            return Reply(error_reply(f"{op.op}: shared memory is off in this @memory ([shared] enabled = false)"))
        try:
            reply = await self._shared.handle(msg, op.op, op.args)
        except Exception:  # a request that trips a bug is answered, not redelivered forever
            return _internal_error(f"serving {op.op}", msg)
        return Reply(json.dumps(reply, ensure_ascii=False))

    async def _forget(self, msg: Message, op: Operation) -> tuple[Reply, str]:
        """Delete events for an admin (see :mod:`memory_agent.retention`); everyone else gets an error."""
        try:
            check_admin(msg.from_handle, self._config.security.admins)
            request = parse_forget(op.args, tz=self._config.tz)
        except AccessDenied as exc:
            log.warning("forget refused: @%s is not an admin (message %s)", msg.from_handle, msg.message_id)
            return Reply(error_reply(str(exc))), "rejected"
        except QueryError as exc:
            return Reply(error_reply(str(exc))), "rejected"
        # storage errors propagate: redelivered, then retried
        count = await self._eraser.forget(request, by=msg.from_handle, request_id=msg.message_id)
        if count:
            await self._on_forgotten(count)
        log.warning("forget by @%s (%s, by %s): %d events deleted", msg.from_handle,
                    "authenticated" if self._config.security.authenticated_senders else "claimed handle",
                    request.selector, count)
        return Reply(json.dumps({"status": "forgotten", "count": count})), "ok"
