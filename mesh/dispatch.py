"""The receiving side of an agent: decode, hand to a request() waiter or the handler, ack.

One Dispatcher per agent. The subscription callback (``on_delivery``) runs sequentially, so it only
decodes and dispatches; handlers run as tasks, at most ``max_in_flight`` at a time (a semaphore,
matching the consumer's MaxAckPending). Acks: ``ack`` after the handler returned; ``nak`` with
``NAK_DELAY`` when it raised; ``term`` after the last allowed delivery, for undecodable bytes and
for an envelope whose sender or recipient differs from its subject ``mesh.inbox.<to>.<from>``;
``in_progress`` every ``ack_wait / 3`` s while a handler runs; an immediate ``nak`` for anything
delivered while the agent is closing. Deliveries that do not come from this handle's own durable
consumer are ignored (not acked).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from .constants import NAK_DELAY, STREAM_NAME
from .context import reset_current_message, set_current_message
from .envelope import decode_envelope, envelope_to_message
from .errors import EnvelopeError, MeshError
from .handles import durable_name, parse_inbox_subject
from .types import Message

__all__ = ["Dispatcher", "MessageHandler"]

log = logging.getLogger("mesh.agent")

#: ``def handler(msg: Message) -> None`` or ``async def handler(msg: Message) -> None``.
MessageHandler = Callable[[Message], Awaitable[None]] | Callable[[Message], None]


class Dispatcher:
    """Runs one agent's deliveries: waiters first, then the handler under the in-flight limit."""

    def __init__(self, handle: str, *, max_in_flight: int, max_deliver: int, ack_wait: float,
                 waiters: dict[str, asyncio.Future[Message]]) -> None:
        self._handle = handle
        self._durable = durable_name(handle)
        self._max_in_flight = max_in_flight
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._waiters = waiters
        self.handler: MessageHandler | None = None
        self.closing = False
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[int] = set()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> int:
        """Handlers running right now."""
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for running handlers; cancel (and nak) the rest."""
        self.closing = True
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("mesh agent %s: %d handlers still running after %.1fs; cancelled",
                            self._handle, len(pending), timeout)
                await asyncio.gather(*pending, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

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
        if consumer != self._durable or stream != STREAM_NAME:
            # Not from this handle's inbox (say another user pointed its consumer at our deliver
            # subject): neither handled nor acked, the ack subject belongs to someone else.
            log.warning("mesh agent %s: delivery from consumer %s of stream %s ignored", self._handle,
                        consumer, stream)
            return
        if self.closing:
            await self._safe(msg.nak())  # redelivered at once to whoever holds the handle next
            return
        try:
            env = decode_envelope(msg.data)
        except EnvelopeError as exc:
            log.warning("mesh agent %s: rejected undecodable message (stream seq %d, %d bytes): %s",
                        self._handle, stream_seq, len(msg.data), exc)
            await self._safe(msg.term())
            return
        route = parse_inbox_subject(msg.subject)
        if route != (self._handle, env.from_handle) or env.to_handle != self._handle:
            # The subject names the sender the server let publish (see docs/mesh.md, "Security"); an
            # envelope that claims another sender or recipient is a forgery or a bug, never handled.
            log.warning("mesh agent %s: rejected message %s (stream seq %d): sent on %s but the envelope "
                        "says from %s to %s", self._handle, env.message_id, stream_seq, msg.subject,
                        env.from_handle, env.to_handle)
            await self._safe(msg.term())
            return
        message = envelope_to_message(env)
        waiter = self._waiters.get(env.session_id)
        if waiter is not None and env.type != "session_open":
            del self._waiters[env.session_id]
            if not waiter.done():
                waiter.set_result(message)
            await self._safe(msg.ack())
            return
        if stream_seq in self._in_flight:
            return  # redelivered while its handler still runs; that handler will ack it
        await self._slots.acquire()
        if self.closing:
            self._slots.release()
            await self._safe(msg.nak())
            return
        self._in_flight.add(stream_seq)
        task = asyncio.create_task(self._run_handler(msg, message, stream_seq, delivered))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, msg: Msg, message: Message, stream_seq: int, delivered: int) -> None:
        keepalive = asyncio.create_task(self._keep_alive(msg))
        started = time.monotonic()
        current = set_current_message(message)  # mesh.context: what this handler (and its calls) handles
        try:
            handler = self.handler
            if handler is None:
                raise MeshError("no on_message handler is set")
            if inspect.iscoroutinefunction(handler):
                await handler(message)
            else:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._get_executor(), contextvars.copy_context().run, handler, message)
                if inspect.isawaitable(result):
                    await result
        except asyncio.CancelledError:
            await self._safe(msg.nak())
            raise
        except Exception as exc:
            final = self._max_deliver != -1 and delivered >= self._max_deliver
            log.error(
                "mesh agent %s: handler failed on message %s (session %s, delivery %d/%s): %s%s",
                self._handle, message.message_id, message.session, delivered,
                self._max_deliver if self._max_deliver != -1 else "inf", type(exc).__name__,
                "; giving up (terminated)" if final else "; will be redelivered",
                exc_info=exc if not isinstance(exc, MeshError) else None,
            )
            await self._safe(msg.term() if final else msg.nak(delay=NAK_DELAY))
        else:
            await self._safe(msg.ack())
            if log.isEnabledFor(logging.DEBUG):
                log.debug("mesh agent %s: handled %s (session %s) in %.2f ms", self._handle,
                          message.message_id, message.session, (time.monotonic() - started) * 1e3)
        finally:
            reset_current_message(current)
            keepalive.cancel()
            self._in_flight.discard(stream_seq)
            self._slots.release()

    async def _keep_alive(self, msg: Msg) -> None:
        """Send in-progress acks every ``ack_wait / 3`` s while the handler runs."""
        interval = max(self._ack_wait / 3.0, 0.05)
        while True:
            await asyncio.sleep(interval)
            await self._safe(msg.in_progress())

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._max_in_flight,
                                                thread_name_prefix=f"mesh-{self._handle}")
        return self._executor

    async def _safe(self, op: Awaitable[Any]) -> None:
        try:
            await op
        except (nats.errors.Error, TimeoutError, OSError) as exc:  # the server redelivers after ack_wait
            log.debug("mesh agent %s: ack operation failed: %s", self._handle, type(exc).__name__)
