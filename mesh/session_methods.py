"""The session methods of AsyncAgent (tailbus's names and signatures, plus ``request()``): open_session,
send, resolve, request, list_sessions.

A mixin, so that agent.py stays about the agent's lifecycle; the work is done by :class:`mesh.sender.Sender`
(sending, under this agent's own session records, :mod:`mesh.sessions`) and :class:`mesh.dispatch.Dispatcher`
(receiving). See docs/mesh.md, "Sessions", "request()" and "Exactly once".
"""

from __future__ import annotations

import asyncio
import uuid

from .dispatch import Dispatcher, Waiter
from .errors import MeshTimeout, SessionClosed
from .operation import operation
from .sender import Sender
from .sessions import SessionBook, SessionStore, session_for
from .types import Message, Opened, Resolved, Sent, SessionInfo

__all__ = ["SessionMethods"]

#: Session records ``list_sessions`` reads at once.
_LIST_CONCURRENCY = 32


class SessionMethods:
    """open_session, send, resolve, request, list_sessions."""

    _handle: str
    _book: SessionBook
    _dispatch: Dispatcher
    _waiters: dict[str, Waiter]
    _sessions: SessionStore | None

    def _sender(self) -> Sender:
        raise NotImplementedError  # AsyncAgent's

    async def open_session(
        self,
        to: str,
        payload: str,
        *,
        content_type: str = "text/plain",
        trace_id: str | None = None,
        message_id: str | None = None,
    ) -> Opened:
        """Open a session with ``to``; its first message carries ``payload``.

        ``trace_id``: the caller's, or a new uuid4 when None/empty; every message of the session
        carries it. ``message_id``: the caller's id for this message (1 to 128 printable characters, unique
        among this agent's messages), else a new uuid4; the session id is derived from it, so calling again with the same ``message_id`` (after a
        timeout, a reconnect, a restart) is the same send: the recipient gets it once (see docs/mesh.md,
        "Exactly once"). Raises InvalidHandle, HandleNotFound (never registered), PayloadTooLarge,
        NotRegistered, MeshTimeout, InboxFull, ClaimLost, ValueError (a bad ``message_id``). Delivery to an
        offline (registered) handle waits in its inbox. Replies in the session reach ``on_message`` only
        after this has returned (as in tailbus).
        """
        with operation("open", f"open_session to {to!r}"):
            outbox = self._sender()
            message_id = _message_id(message_id)
            session = session_for(self._handle, message_id)
            self._book.note(session)
            self._dispatch.hold(session)  # its replies reach on_message only after this returns
            try:
                opened, _state, _retried = await outbox.open(session, to, payload, content_type=content_type,
                                                            trace_id=trace_id, message_id=message_id)
                return opened
            finally:
                self._dispatch.release(session)

    async def send(self, session: str, payload: str, *, content_type: str = "text/plain") -> Sent:
        """Send ``payload`` to the other participant of ``session`` (either side may send).

        Raises SessionNotFound (also for a session this agent is not part of), SessionClosed,
        PayloadTooLarge, NotRegistered, InboxFull, ClaimLost.
        """
        with operation("send", f"send in {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "message")
        self._book.note(session)
        return Sent(message_id=message_id, sequence=seq)

    async def resolve(self, session: str, payload: str = "", *, content_type: str = "text/plain") -> Resolved:
        """Close ``session`` with a final message (either side may resolve; nothing after it).

        Resolving again a session this agent resolved sends the same resolve again (same message id,
        delivered once) when the message it answered is being handled again, say after a crash between
        the resolve's record and its publish; otherwise it raises SessionClosed. Raises SessionNotFound,
        SessionClosed (resolved), PayloadTooLarge, NotRegistered, InboxFull, ClaimLost.
        """
        with operation("resolve", f"resolve {session}"):
            message_id, seq = await self._sender().message(session, payload, content_type, "session_resolve")
        self._book.note(session)
        return Resolved(message_id=message_id, sequence=seq)

    async def request(
        self,
        to: str,
        payload: str,
        *,
        content_type: str = "text/plain",
        trace_id: str | None = None,
        timeout: float = 30.0,
        message_id: str | None = None,
    ) -> Message:
        """Open a session with ``to`` and return the first message that comes back in it from ``to``.

        That is the resolve message if the peer resolves straight away, otherwise its first reply
        (later messages of the session then go to ``on_message``). Only ``to`` can answer: a message in
        the session from anyone else (by the sender its subject names) is refused. The waiter exists
        before the open is published, so a fast answer is never missed; the answer arrives in this
        agent's durable inbox like any other message and is not passed to ``on_message``.
        ``message_id``: as for ``open_session``; a retry with the same id gets the answer the earlier
        call missed if it came to this process meanwhile. Raises MeshTimeout (``.timeout``) if nothing
        arrives within ``timeout`` s (the session stays open, and whatever arrives in it later is dropped
        with a debug line), AgentClosed when the agent closes meanwhile, SessionClosed when a retry (in the
        same process) asks again a request that was answered, plus everything ``open_session`` raises.
        """
        outbox = self._sender()
        message_id = _message_id(message_id)
        session = session_for(self._handle, message_id)
        late = self._dispatch.late_reply(session)
        if late is not None:
            return late
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters[session] = Waiter(peer=to, future=fut)
        self._book.note(session)
        answered = False
        try:
            with operation("open", f"request to {to!r}"):
                _opened, state, retried = await outbox.open(session, to, payload, content_type=content_type,
                                                            trace_id=trace_id, message_id=message_id)
            if retried and state.resolved and not fut.done():
                closed = SessionClosed(session)
                closed.request_type = "open"
                raise closed
            try:
                reply = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    answered = True
                    return fut.result()
                err = MeshTimeout(f"no reply from {to!r} in session {session} within {timeout}s", timeout=timeout)
                err.request_type = "open"
                raise err from None
            answered = True
            return reply
        finally:
            self._waiters.pop(session, None)
            if not answered:
                self._dispatch.abandon(session, to)

    async def list_sessions(self) -> list[SessionInfo]:
        """The sessions this agent has taken part in since it started (opened, sent or received in; the
        1,024 most recent), with their state as this agent's record has it now (``"open"`` or
        ``"resolved"``), oldest first. Sessions whose record expired (7 days) are left out. Raises
        NotRegistered."""
        self._sender()
        sessions = self._sessions
        assert sessions is not None
        slots = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def read(session: str) -> SessionInfo | None:
            async with slots:
                state = await sessions.current(session)
            if state is None:
                return None
            return SessionInfo(session=session, from_handle=state.from_handle, to_handle=state.to_handle,
                               state="resolved" if state.resolved else "open", trace_id=state.trace_id)

        with operation("sessions", "list_sessions"):
            found = await asyncio.gather(*(read(s) for s in self._book.ids()))
        return [info for info in found if info is not None]


def _message_id(message_id: str | None) -> str:
    """The caller's message id, checked (1 to 128 printable characters: it travels in a NATS header, where a
    control character would break the protocol), or a new uuid4."""
    if message_id is None:
        return str(uuid.uuid4())
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 128 or not message_id.isprintable():
        raise ValueError("message_id must be a string of 1 to 128 printable characters "
                         "(no control characters or line breaks)")
    return message_id
