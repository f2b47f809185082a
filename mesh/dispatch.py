"""The receiving side of an agent: decode, check, hand to a request() waiter or the handler, ack.

One Dispatcher per agent, fed by three durable consumers that deliver to the owner's subject: the
normal lane (``inbox_<handle>`` of ``MESH_INBOX``), the priority lane (``priority_<handle>`` of
``MESH_PRIORITY``) and the room events (``rooms_<handle>`` of ``MESH_ROOMS``). Deliveries from any other
consumer are ignored (not acked). The subscription callback (``on_delivery``) runs sequentially, so it
only decodes and dispatches; handlers run as tasks, at most ``max_in_flight`` at a time per lane (one
semaphore per lane, matching each consumer's MaxAckPending; room events share the normal lane's), so a
burst in one lane never holds up the other.

What happens to a delivery (see docs/mesh.md, "Semantics"):

* handler returned: ``ack``;
* handler raised :class:`~mesh.errors.Retry` (or anything, with ``retry_on_error``): ``nak`` with its
  delay, ``term`` after the last allowed delivery;
* handler raised anything else: logged once with its traceback, ``term`` (dropped, as tailbus does);
* the process dies first: no ack, so the server redelivers after ``ack_wait``; while the handler
  runs, ``in_progress`` every ``ack_wait / 3`` s keeps it from being redelivered early;
* no handler set: ``ack`` (a ``session_open`` is logged as a warning, the rest at debug);
* a message in a session whose ``request()`` gave up: ``ack``, a debug line (kept for a retry of that
  request() with the same message id);
* undecodable bytes, an envelope whose sender or recipient differs from its subject, a message whose
  sender is not its session's peer (see :mod:`mesh.sessions`), a room event whose sender is not (and was
  not) a member of its room: ``term`` and a warning;
* a second stored copy of a message already received, or a message sent after (or across) its
  session's resolve: ``ack``, dropped with a log line;
* the agent lost its handle's claim (see :mod:`mesh.presence`): nothing is acknowledged any more, the
  running handlers are cancelled, and the new owner gets the messages.

Handlers of one session (or room) run one at a time, in delivery order, when they are sync handlers
(:class:`~mesh.lanes.Lanes`); async handlers start in delivery order and interleave at their awaits.
Admission (the session record check) is made in delivery order per session, whatever the handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import nats.errors
from nats.aio.msg import Msg

from .constants import NAK_DELAY, PRIORITY_STREAM, ROOMS_STREAM, STREAM_NAME
from .context import reset_current_message, set_current_message
from .envelope import Envelope, decode_envelope, envelope_to_message
from .errors import EnvelopeError, MeshError, Retry
from .handles import (
    durable_name,
    parse_inbox_subject,
    parse_room_subject,
    priority_durable_name,
    rooms_durable_name,
)
from .lanes import Lanes
from .priority import Lane
from .rooms.wire import decode_room_event
from .sessions import SessionStore, Verdict
from .types import Message, RoomEvent

__all__ = ["Dispatcher", "MessageHandler", "Waiter"]

log = logging.getLogger("mesh.agent")

#: ``def handler(msg) -> None`` or ``async def handler(msg) -> None``; ``msg`` is a Message or, for a
#: room member, a RoomEvent (as in tailbus). A handler typed for Message only is accepted too.
MessageHandler = (Callable[[Message], Awaitable[None]] | Callable[[Message], None]
                  | Callable[[Message | RoomEvent], Awaitable[None]] | Callable[[Message | RoomEvent], None])
#: Why a room event cannot be genuine, or None (see Rooms.verify).
RoomCheck = Callable[[RoomEvent], Awaitable[str | None]]
#: "May this agent still act as its handle?" (see Presence.confirm); False once the claim is lost.
Confirm = Callable[[], Awaitable[bool]]

#: How many sessions whose request() gave up are remembered (their late messages are dropped, the first
#: one kept for a retry of that request()).
_ABANDONED_LIMIT = 10_000
_LATE_REPLIES = 1024


@dataclass(slots=True)
class Waiter:
    """A ``request()`` waiting for the first message of ``session`` from ``peer``."""

    peer: str
    future: asyncio.Future[Message]


@dataclass(slots=True)
class _Item:
    """One delivery to run: the message or event, its lane and key (session or room), and its envelope."""

    msg: Msg
    item: Message | RoomEvent
    key: str
    lane: Lane
    ref: tuple[str, int]
    delivered: int
    env: Envelope | None = None


class Dispatcher:
    """Runs one agent's deliveries: waiters first, then the handler under the in-flight limit of its lane."""

    def __init__(self, handle: str, *, max_in_flight: int, max_deliver: int, ack_wait: float,
                 waiters: dict[str, Waiter], retry_on_error: bool = False,
                 on_session: Callable[[str], None] | None = None) -> None:
        self._handle = handle
        self._sources: dict[tuple[str, str], Lane] = {
            (STREAM_NAME, durable_name(handle)): "normal",
            (PRIORITY_STREAM, priority_durable_name(handle)): "priority",
            (ROOMS_STREAM, rooms_durable_name(handle)): "normal",
        }
        self._max_in_flight = max_in_flight
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._retry_on_error = retry_on_error
        self._waiters = waiters
        self._on_session = on_session
        self.handler: MessageHandler | None = None
        self.check_room: RoomCheck | None = None
        self.sessions: SessionStore | None = None
        self.confirm: Confirm | None = None
        self.closing = False
        self.fenced = False
        self._abandoned: OrderedDict[str, str] = OrderedDict()
        self._late: OrderedDict[str, Message] = OrderedDict()
        self._opening: dict[str, asyncio.Event] = {}
        self._lanes = Lanes()
        self._admission = Lanes()
        self._handling: dict[str, dict[str, int]] = {}
        self._slots: dict[Lane, asyncio.Semaphore] = {"normal": asyncio.Semaphore(max_in_flight),
                                                      "priority": asyncio.Semaphore(max_in_flight)}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[tuple[str, int]] = set()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> int:
        """Handlers running (or waiting for their turn) right now."""
        return len(self._tasks)

    def handling(self, session: str) -> dict[str, int]:
        """The messages of ``session`` whose handlers run now: message id -> sequence (see SessionStore.advance)."""
        return dict(self._handling.get(session, {}))

    def abandon(self, session: str, peer: str) -> None:
        """``request()`` gave up on ``session`` (opened to ``peer``): its later messages are dropped (debug
        line), not handled; the first one from ``peer`` is kept for a retry (:meth:`late_reply`)."""
        self._abandoned[session] = peer
        self._abandoned.move_to_end(session)
        while len(self._abandoned) > _ABANDONED_LIMIT:
            self._abandoned.popitem(last=False)

    def late_reply(self, session: str) -> Message | None:
        """The first message that came in ``session`` after its request() gave up, if any (and forget it)."""
        self._abandoned.pop(session, None)
        return self._late.pop(session, None)

    def hold(self, session: str) -> None:
        """``open_session()`` is opening ``session``: its replies wait for :meth:`release`."""
        self._opening[session] = asyncio.Event()

    def release(self, session: str) -> None:
        """The open returned: replies waiting on ``session`` run once the opener's task next yields."""
        gate = self._opening.pop(session, None)
        if gate is not None:
            gate.set()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for running handlers; cancel (and nak) the rest."""
        self.closing = True
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("mesh agent %s: %d handlers still running after %.1fs; cancelled (their messages "
                            "are delivered again)", self._handle, len(pending), timeout)
                await asyncio.gather(*pending, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def fence(self) -> None:
        """The claim is lost: acknowledge nothing more and cancel every running handler (their messages go to
        the new owner, which the server delivers them to)."""
        self.fenced = True
        self.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def on_delivery(self, msg: Msg) -> None:
        """Subscription callback; runs sequentially, so it only decodes and dispatches."""
        if not msg.reply:
            log.warning("mesh agent %s: delivery without ack subject on %s ignored", self._handle, msg.subject)
            return
        try:
            meta = msg.metadata
            stream_seq, delivered = meta.sequence.stream, meta.num_delivered
            consumer, stream = meta.consumer, meta.stream
        except (nats.errors.Error, ValueError, IndexError, AttributeError):
            log.warning("mesh agent %s: delivery with a non-JetStream reply subject ignored", self._handle)
            return
        lane = self._sources.get((stream, consumer))
        if lane is None:
            # Not from this handle's consumers (say another user pointed its consumer at our deliver
            # subject): neither handled nor acked, the ack subject belongs to someone else.
            log.warning("mesh agent %s: delivery from consumer %s of stream %s ignored", self._handle,
                        consumer, stream)
            return
        if self.fenced or (self.confirm is not None and not await self.confirm()):
            return  # no longer the owner: the new owner's consumer delivers this message
        if self.closing:
            await self._safe(msg.nak)  # redelivered at once to whoever holds the handle next
            return
        routed = (self._room_item(msg, stream_seq) if stream == ROOMS_STREAM
                  else self._inbox_item(msg, stream_seq, lane))
        if isinstance(routed, Awaitable):
            await routed  # acked or terminated: nothing to run
            return
        item, key, env = routed
        ref = (stream, stream_seq)
        if ref in self._in_flight:
            return  # redelivered while its handler still runs; that handler will ack it
        if isinstance(item, RoomEvent) and not await self._genuine(msg, item):
            return  # checked here, in delivery order (a room's record is cached after its first event)
        slots = self._slots[lane]
        await slots.acquire()
        if self.closing:
            slots.release()
            await self._safe(msg.nak)
            return
        handler = self.handler
        turn = self._lanes.enter(key) if handler is not None and not inspect.iscoroutinefunction(handler) else None
        admission = self._admission.enter(key) if env is not None else None
        self._in_flight.add(ref)
        gate = self._opening.get(key) if isinstance(item, Message) else None
        run = _Item(msg, item, key, lane, ref, delivered, env)
        task = asyncio.create_task(self._run(run, turn, admission, gate))
        self._tasks.add(task)
        # Released in a callback, not in _run: a task cancelled before its first step never runs its body.
        task.add_done_callback(lambda t: self._finish(t, run, turn, admission))

    def _finish(self, task: asyncio.Task[None], run: _Item, turn: asyncio.Future[None] | None,
                admission: asyncio.Future[None] | None) -> None:
        self._tasks.discard(task)
        if admission is not None:
            self._admission.leave(run.key, admission)  # a no-op once _admit left it
        if turn is not None:
            self._lanes.leave(run.key, turn)
        self._in_flight.discard(run.ref)
        self._slots[run.lane].release()

    def _inbox_item(self, msg: Msg, stream_seq: int,
                    lane: Lane) -> tuple[Message, str, Envelope] | Awaitable[None]:
        try:
            env = decode_envelope(msg.data)
        except EnvelopeError as exc:
            log.warning("mesh agent %s: rejected undecodable message (stream seq %d, %d bytes): %s",
                        self._handle, stream_seq, len(msg.data), exc)
            return self._safe(msg.term)
        route = parse_inbox_subject(msg.subject)
        if route != (self._handle, env.from_handle) or env.to_handle != self._handle:
            # The subject names the sender the server let publish (see docs/mesh.md, "Security"); an
            # envelope that claims another sender or recipient is a forgery or a bug, never handled.
            log.warning("mesh agent %s: rejected message %s (stream seq %d): sent on %s but the envelope "
                        "says from %s to %s", self._handle, env.message_id, stream_seq, msg.subject,
                        env.from_handle, env.to_handle)
            return self._safe(msg.term)
        message = envelope_to_message(env, lane)
        if self._on_session is not None:
            self._on_session(env.session_id)
        waiter = self._waiters.get(env.session_id)
        if waiter is not None and env.type != "session_open":
            if env.from_handle != waiter.peer:
                log.warning("mesh agent %s: rejected %s %s in session %s: it came from %s, but the session was "
                            "opened to %s", self._handle, env.type, env.message_id, env.session_id,
                            env.from_handle, waiter.peer)
                return self._safe(msg.term)
            del self._waiters[env.session_id]
            if not waiter.future.done():
                waiter.future.set_result(message)
            self._noted(env, stream_seq)
            return self._safe(msg.ack)
        abandoned = self._abandoned.get(env.session_id)
        if env.type != "session_open" and abandoned is not None:
            if env.from_handle == abandoned and env.session_id not in self._late:
                self._late[env.session_id] = message
                while len(self._late) > _LATE_REPLIES:
                    self._late.popitem(last=False)
            self._noted(env, stream_seq)
            log.debug("mesh agent %s: dropped %s %s in session %s: its request() gave up waiting", self._handle,
                      env.type, env.message_id, env.session_id)
            return self._safe(msg.ack)
        return message, env.session_id, env

    def _noted(self, env: Envelope, stream_seq: int) -> None:
        """A message of a session this agent opened reached a request(): this process's view of the record
        follows it (no write: for the requester the session is over, and a write per request cost a tenth
        of the throughput in bench/mesh_roundtrip.py; after a restart the record reads as open, and what
        it sends there the peer drops)."""
        sessions = self.sessions
        if sessions is None:
            return
        sessions.note_seen(env.session_id, env.sequence)
        if env.type == "session_resolve":
            sessions.resolve_seen(env, stream_seq)

    def _room_item(self, msg: Msg, stream_seq: int) -> tuple[RoomEvent, str, None] | Awaitable[None]:
        try:
            event = decode_room_event(msg.data)
        except EnvelopeError as exc:
            log.warning("mesh agent %s: rejected undecodable room event (stream seq %d, %d bytes): %s",
                        self._handle, stream_seq, len(msg.data), exc)
            return self._safe(msg.term)
        if parse_room_subject(msg.subject) != (self._handle, event.room_id, event.sender_handle):
            log.warning("mesh agent %s: rejected room event %s (stream seq %d): sent on %s but it says room %s "
                        "from %s", self._handle, event.event_id, stream_seq, msg.subject, event.room_id,
                        event.sender_handle)
            return self._safe(msg.term)
        if event.sender_handle == self._handle:
            return self._safe(msg.ack)  # our own copy, kept for replays only
        return event, event.room_id, None

    async def _admit(self, run: _Item, admission: asyncio.Future[None] | None) -> bool:
        """The session check, in delivery order per session; False if the message was settled here."""
        env, sessions = run.env, self.sessions
        if env is None or sessions is None:
            return True
        try:
            if admission is not None:
                await admission
            try:
                verdict, reason = await sessions.admit(env, run.ref[1])
            except (MeshError, nats.errors.Error, TimeoutError, OSError) as exc:
                log.warning("mesh agent %s: cannot read the record of session %s for %s (%s); retrying in %.0fs",
                            self._handle, env.session_id, env.message_id, type(exc).__name__, NAK_DELAY)
                await self._safe(lambda: run.msg.nak(delay=NAK_DELAY))
                return False
        finally:
            if admission is not None:
                self._admission.leave(run.key, admission)
        if verdict is Verdict.DELIVER:
            return True
        if verdict is Verdict.FOREIGN:
            log.warning("mesh agent %s: rejected %s %s in session %s: %s", self._handle, env.type, env.message_id,
                        env.session_id, reason)
            await self._safe(run.msg.term)
        else:
            log.log(logging.DEBUG if verdict is Verdict.DUPLICATE else logging.INFO,
                    "mesh agent %s: dropped %s %s in session %s: %s", self._handle, env.type, env.message_id,
                    env.session_id, reason)
            await self._safe(run.msg.ack)
        return False

    async def _run(self, run: _Item, turn: asyncio.Future[None] | None, admission: asyncio.Future[None] | None,
                   gate: asyncio.Event | None) -> None:
        msg, item, key = run.msg, run.item, run.key
        keepalive = asyncio.create_task(self._keep_alive(msg))
        started = time.monotonic()
        current = set_current_message(item)  # mesh.context: what this handler (and its calls) handles
        handling: dict[str, int] | None = None
        try:
            if not await self._admit(run, admission):
                return
            handler = cast(Callable[[Any], Any] | None, self.handler)
            if handler is None:
                opening = isinstance(item, Message) and item.message_type == "session_open"
                log.log(logging.WARNING if opening else logging.DEBUG,
                        "mesh agent %s: no on_message handler is set; dropped %s", self._handle, _describe(item))
                await self._safe(msg.ack)
                return
            if gate is not None:
                await gate.wait()
            if turn is not None:
                await turn
            if isinstance(item, Message):
                handling = self._handling.setdefault(key, {})
                handling[item.message_id] = item.sequence
            if inspect.iscoroutinefunction(handler):
                await handler(item)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._get_executor(), contextvars.copy_context().run, handler, item)
                if inspect.isawaitable(result):
                    await result
        except asyncio.CancelledError:
            await self._safe(msg.nak)
            raise
        except Retry as exc:
            await self._retry(msg, item, run.delivered, exc.delay, exc)
        except Exception as exc:
            if self._retry_on_error:
                await self._retry(msg, item, run.delivered, NAK_DELAY, exc)
            else:
                log.error("mesh agent %s: handler failed on %s: %s; dropped (raise mesh.Retry to have it "
                          "delivered again)", self._handle, _describe(item), type(exc).__name__,
                          exc_info=exc if not isinstance(exc, MeshError) else None)
                await self._safe(msg.term)
        else:
            await self._safe(msg.ack)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("mesh agent %s: handled %s in %.2f ms", self._handle, _describe(item),
                          (time.monotonic() - started) * 1e3)
        finally:
            reset_current_message(current)
            keepalive.cancel()
            if handling is not None and isinstance(item, Message):
                handling.pop(item.message_id, None)
                if not handling:
                    self._handling.pop(key, None)

    async def _genuine(self, msg: Msg, event: RoomEvent) -> bool:
        """Check a room event against its room's record; terminate (False) one from a non-member."""
        if self.check_room is None:
            return True
        try:
            reason = await self.check_room(event)
        except (MeshError, nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("mesh agent %s: cannot read room %s to check event %s (%s); retrying in %.0fs",
                        self._handle, event.room_id, event.event_id, type(exc).__name__, NAK_DELAY)
            await self._safe(lambda: msg.nak(delay=NAK_DELAY))
            return False
        if reason is not None:
            log.warning("mesh agent %s: rejected room event %s: %s", self._handle, event.event_id, reason)
            await self._safe(msg.term)
            return False
        return True

    async def _retry(self, msg: Msg, item: Message | RoomEvent, delivered: int, delay: float,
                     exc: BaseException) -> None:
        final = self._max_deliver != -1 and delivered >= self._max_deliver
        log.log(logging.ERROR if final else logging.WARNING,
                "mesh agent %s: handler failed on %s (delivery %d/%s): %s%s", self._handle, _describe(item),
                delivered, self._max_deliver if self._max_deliver != -1 else "inf", type(exc).__name__,
                "; giving up (terminated)" if final else f"; delivered again in {delay:g}s",
                exc_info=exc if not isinstance(exc, MeshError) else None)
        if final:
            await self._safe(msg.term)
        else:
            await self._safe(lambda: msg.nak(delay=max(delay, 0.0)))

    async def _keep_alive(self, msg: Msg) -> None:
        """Send in-progress acks every ``ack_wait / 3`` s while the handler runs."""
        interval = max(self._ack_wait / 3.0, 0.05)
        while True:
            await asyncio.sleep(interval)
            await self._safe(msg.in_progress)

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2 * self._max_in_flight,
                                                thread_name_prefix=f"mesh-{self._handle}")
        return self._executor

    async def _safe(self, op: Callable[[], Awaitable[Any]]) -> None:
        """Acknowledge (ack, nak, term, in-progress) unless this agent no longer holds its handle."""
        if self.fenced or (self.confirm is not None and not await self.confirm()):
            return
        try:
            await op()
        except (nats.errors.Error, TimeoutError, OSError) as exc:  # the server redelivers after ack_wait
            log.debug("mesh agent %s: ack operation failed: %s", self._handle, type(exc).__name__)


def _describe(item: Message | RoomEvent) -> str:
    """Ids for a log line (never the payload)."""
    if isinstance(item, RoomEvent):
        return f"room event {item.event_id} ({item.event_type} #{item.room_seq} in room {item.room_id} " \
               f"from {item.sender_handle})"
    return f"{item.message_type} {item.message_id} (session {item.session}, from {item.from_handle})"
