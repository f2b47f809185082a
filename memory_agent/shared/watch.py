"""Change subscriptions on the SDK side: AgentField's ``on_change`` patterns over ``MEMORY_CHANGES``.

A :class:`ChangeStream` narrows on the server as far as subjects allow (scope, scope id and each pattern's
literal leading tokens, :func:`~memory_agent.shared.keys.change_filters`, one ordered consumer per
filter) and finishes each pattern's glob on the client. It starts at new changes, or replays from a time
(``since``) or a stream sequence (``from_seq``) for a late subscriber: events it delivers carry their
``seq``, so a subscriber that stores the last one can resume exactly after it.

:class:`Listener` runs a decorated ``on_change`` handler over a stream until stopped: events one at a
time, in order; an ``async def`` handler is awaited, a plain function runs in a worker thread; a handler
that raises is logged (with the event's sequence) and the next event still comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Self

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from memory_agent.errors import SharedMemoryError
from memory_agent.shared.constants import Scope
from memory_agent.shared.keys import KeyPattern, change_filters
from memory_agent.shared.state import StateStore
from memory_agent.shared.wire import ChangeEvent
from mesh.tasks import cancel_and_wait

__all__ = ["ChangeHandler", "ChangeStream", "Listener", "patterns_of"]

log = logging.getLogger(__name__)

#: ``def handler(event: ChangeEvent) -> None`` or ``async def handler(event: ChangeEvent) -> None``.
ChangeHandler = Callable[[ChangeEvent], Awaitable[None]] | Callable[[ChangeEvent], None]
#: Events buffered per stream before the consumer waits (the server holds the rest: flow control).
_BUFFER = 10_000


def patterns_of(patterns: str | Iterable[str]) -> list[KeyPattern]:
    """One pattern or several (AgentField accepts both); raises SharedMemoryError for none or a bad one."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    if not items:
        raise SharedMemoryError("give at least one key pattern, e.g. \"ticket:*\" (\"*\" for every key)",
                                field="pattern")
    return [KeyPattern(p) for p in items]


class ChangeStream:
    """Change events matching ``patterns`` in ``scope``/``scope_id`` (``None`` = every), as an async iterator.

    ``since``: replay from this time (seconds since the epoch, UTC, or an aware datetime); ``from_seq``:
    from this stream sequence; neither: only changes after :meth:`start`. ``subscribe(subject, deliver,
    **options)`` opens one consumer: ``store``'s :meth:`StateStore.subscribe_changes` unless given (the SDK
    wraps it to turn a refused subscription into PermissionDenied). Use ``async with`` or :meth:`start` /
    :meth:`stop`.
    """

    def __init__(self, store: StateStore | None, patterns: str | Iterable[str], *, scope: Scope | None = None,
                 scope_id: str | None = None, since: float | datetime | None = None, from_seq: int | None = None,
                 subscribe: Callable[..., Awaitable[Any]] | None = None) -> None:
        if since is not None and from_seq is not None:
            raise SharedMemoryError("give since or from_seq, not both", field="since")
        if from_seq is not None and (isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 1):
            raise SharedMemoryError(f"from_seq is a stream sequence (>= 1), not {from_seq!r}", field="from_seq")
        self.patterns = patterns_of(patterns)
        self.scope = scope
        self.scope_id = scope_id
        if subscribe is None:
            if store is None:
                raise ValueError("ChangeStream needs a store or a subscribe function")
            subscribe = store.subscribe_changes
        self._subscribe = subscribe
        self._since = since if since is None or isinstance(since, datetime) else datetime.fromtimestamp(since, UTC)
        self._from_seq = from_seq
        self._queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(_BUFFER)
        self._subs: list[Any] = []
        self._stopped = False

    @property
    def filters(self) -> list[str]:
        """The subjects consumed on the server."""
        return change_filters(self.patterns, scope=self.scope, scope_id=self.scope_id)

    def matches(self, event: ChangeEvent) -> bool:
        """The client's half of the filter: scope, scope id and each pattern's whole glob."""
        if self.scope is not None and event.scope != self.scope:
            return False
        if self.scope_id is not None and event.scope_id != self.scope_id:
            return False
        return any(p.matches(event.key) for p in self.patterns)

    async def start(self) -> Self:
        """Open the consumers (once). Raises SharedMemoryUnavailable, or PermissionDenied from ``subscribe``."""
        if self._subs or self._stopped:
            return self
        if self._since is not None:
            options: dict[str, Any] = {"policy": DeliverPolicy.BY_START_TIME, "start_time": self._since}
        elif self._from_seq is not None:
            options = {"policy": DeliverPolicy.BY_START_SEQUENCE, "start_seq": self._from_seq}
        else:
            options = {"policy": DeliverPolicy.NEW}
        try:
            for subject in self.filters:
                self._subs.append(await self._subscribe(subject, self._deliver, **options))
        except BaseException:
            await self.stop()
            raise
        return self

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = ChangeEvent.from_json(json.loads(msg.data), seq=msg.metadata.sequence.stream)
        except (ValueError, AttributeError):
            log.warning("shared memory: skipped an undecodable change event on %s", msg.subject)
            return
        if self.matches(event):
            await self._queue.put(event)

    async def stop(self) -> None:
        """Close the consumers and end the iteration (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await sub.unsubscribe()
        self._subs.clear()
        if self._queue.full():  # the reader is behind and stopping: make room for the end marker
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self, timeout: float | None = None) -> ChangeEvent | None:
        """The next event, or ``None`` once stopped (or after ``timeout`` seconds without one)."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if event is None:
            self._queue.put_nowait(None)  # every later call sees the end too
        return event

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChangeEvent:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Listener:
    """Runs ``handler`` over ``stream`` in a task until :meth:`stop` (see the module docstring)."""

    def __init__(self, handler: ChangeHandler, stream: ChangeStream) -> None:
        self.handler = handler
        self.stream = stream
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the stream and start delivering; raises what :meth:`ChangeStream.start` raises."""
        await self.stream.start()
        name = getattr(self.handler, "__name__", "on_change")
        self._task = asyncio.create_task(self._run(), name=f"memory-on-change-{name}")

    async def _run(self) -> None:
        is_async = inspect.iscoroutinefunction(self.handler)
        async for event in self.stream:
            try:
                if is_async:
                    await self.handler(event)  # type: ignore[misc]
                else:
                    result = await asyncio.to_thread(self.handler, event)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("on_change handler %s failed on change %d (%s of a key in %s)",
                              getattr(self.handler, "__name__", "?"), event.seq, event.action, event.scope)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the stream; a handler running now gets ``grace`` seconds to finish, then is cancelled."""
        await self.stream.stop()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait({task}, timeout=grace)
            # Cancelled until it ends: a handler's NATS request can lose the cancellation on 3.11 (mesh.tasks).
            failed = await cancel_and_wait(task)
            if failed is not None:
                log.error("change listener %s had failed", task.get_name(), exc_info=failed)
