"""A small client for talking to @memory over the mesh, used by the CLI (any agent can do the same).

It joins the mesh under an ephemeral handle (``cli-<8 hex>``, or ``<handle_prefix>-<8 hex>``, unless one
is given) that is removed again on close.
"""

from __future__ import annotations

import json
import uuid
from types import TracebackType
from typing import Any

from memory_agent.errors import QueryError
from mesh import AsyncAgent, Message, NatsAuth

__all__ = ["MemoryClient"]


class MemoryClient:
    """``async with MemoryClient(url) as c: await c.ask("...")``. ``timeout`` in seconds, per request.

    ``auth``: NATS credentials and TLS (see :class:`mesh.NatsAuth`). ``client_handle``: the handle to
    use (a server with per-handle permissions needs a fixed one; ``forget`` needs an admin's);
    default ``cli-<8 hex>``. Raises mesh errors (``AuthenticationError`` when NATS refuses the
    credentials, ``HandleNotFound`` when no @memory ever registered, ``HandleTaken`` when another
    client uses ``client_handle`` right now, ``MeshTimeout``).
    """

    def __init__(
        self,
        nats_url: str,
        *,
        handle: str = "memory",
        timeout: float = 30.0,
        connect_options: dict[str, Any] | None = None,
        auth: NatsAuth | None = None,
        client_handle: str | None = None,
        handle_prefix: str = "cli",
    ) -> None:
        self.memory_handle = handle
        self.timeout = timeout
        # A command-line client gives up quickly on a server that is not there, instead of
        # retrying forever as a long-running agent does.
        options = {"connect_timeout": 2, "max_reconnect_attempts": 2, "reconnect_time_wait": 0.5}
        options.update(connect_options or {})
        self._agent = AsyncAgent(client_handle or f"{handle_prefix}-{uuid.uuid4().hex[:8]}", servers=nats_url,
                                 connect_options=options, auth=auth)

    @property
    def handle(self) -> str:
        """The handle this client uses on the mesh."""
        return self._agent.handle

    async def __aenter__(self) -> MemoryClient:
        try:
            await self._agent.start()
            await self._agent.register(ephemeral=True)
        except BaseException:
            await self._agent.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._agent.close()

    async def request(self, payload: str, *, content_type: str, trace_id: str | None = None) -> Message:
        return await self._agent.request(
            self.memory_handle, payload, content_type=content_type, trace_id=trace_id, timeout=self.timeout
        )

    async def ask(self, question: str) -> str:
        """A plain-text question; returns @memory's plain-text answer. Raises QueryError with @memory's
        words when it refuses the question (empty, too long)."""
        reply = await self.request(question, content_type="text/plain")
        if reply.content_type.startswith("application/json"):
            body = json.loads(reply.payload)
            if isinstance(body, dict) and body.get("status") == "error":
                raise QueryError(str(body.get("error", "@memory refused the question")))
        return reply.payload

    async def ask_structured(self, query: dict[str, Any]) -> dict[str, Any]:
        """A structured question ``{"query": ..., "limit": ..., ...}``; returns the decoded JSON reply."""
        reply = await self.request(json.dumps(query), content_type="application/json")
        return dict(json.loads(reply.payload))

    async def report(self, event: dict[str, Any], *, trace_id: str | None = None) -> dict[str, Any]:
        """Report one event; returns ``{"status": "stored", "id": ..., "duplicate": ...}`` or an error object."""
        reply = await self.request(json.dumps(event), content_type="application/json", trace_id=trace_id)
        return dict(json.loads(reply.payload))

    async def stats(self) -> dict[str, Any]:
        reply = await self.request(json.dumps({"op": "stats"}), content_type="application/json")
        return dict(json.loads(reply.payload))

    async def forget(self, **selector: Any) -> dict[str, Any]:
        """Delete events: ``forget(trace_id="t-81")``, ``forget(id=12)`` or ``forget(before="2026-11-01")``.

        Returns ``{"status": "forgotten", "count": n}``, or ``{"status": "error", "error": ...}`` when this
        client's handle is not one of @memory's admins or the selector is wrong.
        """
        reply = await self.request(json.dumps({"op": "forget", **selector}), content_type="application/json")
        return dict(json.loads(reply.payload))
