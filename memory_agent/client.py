"""The client of @memory: report, ask, and share state, over the mesh (used by the CLI and by agents).

Standalone, it joins the mesh under an ephemeral handle (``cli-<8 hex>``, or ``<handle_prefix>-<8 hex>``,
unless one is given) that is removed again on close. Inside an agent, ``MemoryClient(agent=agent)`` uses
that agent's handle and connection, so its actor scope is the agent's and, in an ``on_message`` handler,
its workflow scope is the handled message's trace id.

Shared memory (README "Shared memory") follows AgentField's ``memory`` API under our names: ``set``,
``get``, ``exists``, ``delete``, ``list_keys``, the scoped views ``session(id)``, ``actor(id)``,
``workflow(id)``, ``global_scope``, ``on_change(patterns)``, ``set_vector``, ``similarity_search``,
``delete_vector``; plus meshflow's ``recent``, ``context_string`` and ``record_outcome``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from memory_agent.errors import (
    QueryError,
    ReportError,
    SharedMemoryError,
    SharedMemoryUnavailable,
    ValueTooLarge,
)
from memory_agent.shared.constants import (
    CHANGES_STREAM,
    DEFAULT_NAMESPACE,
    DEFAULT_TOP_K,
    STATE_STREAM,
    Scope,
)
from memory_agent.shared.context import format_context
from memory_agent.shared.keys import Address, validate_key
from memory_agent.shared.requests import parse_embedding
from memory_agent.shared.scoped import ScopedMemory
from memory_agent.shared.state import StateStore
from memory_agent.shared.watch import ChangeHandler, ChangeStream, Listener
from memory_agent.shared.wire import ChangeEvent, Entry, VectorHit, raise_for_reply
from mesh import AsyncAgent, Message, NatsAuth
from mesh.access import guard, jetstream
from mesh.context import current_trace_id
from mesh.errors import PayloadTooLarge, PermissionDenied

__all__ = ["MemoryClient"]

log = logging.getLogger(__name__)

H = TypeVar("H", bound=ChangeHandler)


class MemoryClient:
    """``async with MemoryClient(url) as c: await c.ask("...")``; ``MemoryClient(agent=my_agent)`` inside an
    agent (which must be registered: replies come to its inbox). ``timeout``: seconds per request.

    ``auth``: NATS credentials and TLS (see :class:`mesh.NatsAuth`). ``client_handle``: the handle to use
    standalone (a server with per-handle permissions needs a fixed one; ``forget`` needs an admin's);
    default ``cli-<8 hex>``. ``session_id``: the session scope of the hierarchical get; ``workflow_id``: the
    workflow outside handlers. ``direct_reads``: read shared memory straight from JetStream when the
    server allows (else through @memory). Raises mesh errors (``AuthenticationError``, ``HandleNotFound``
    when no @memory ever registered, ``HandleTaken`` when another client uses ``client_handle``,
    ``MeshTimeout``).
    """

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        agent: AsyncAgent | None = None,
        handle: str = "memory",
        timeout: float = 30.0,
        connect_options: dict[str, Any] | None = None,
        auth: NatsAuth | None = None,
        client_handle: str | None = None,
        handle_prefix: str = "cli",
        session_id: str | None = None,
        workflow_id: str | None = None,
        direct_reads: bool = True,
    ) -> None:
        if (nats_url is None) == (agent is None):
            raise ValueError("give MemoryClient a nats_url (it joins the mesh itself) or an agent, not both")
        self.memory_handle = handle
        self.timeout = timeout
        self.session_id = session_id
        self.workflow_id = workflow_id
        self._direct = direct_reads
        self._owns_agent = agent is None
        if agent is None:
            # A command-line client gives up quickly on a server that is not there, instead of
            # retrying forever as a long-running agent does.
            options = {"connect_timeout": 2, "max_reconnect_attempts": 2, "reconnect_time_wait": 0.5}
            options.update(connect_options or {})
            agent = AsyncAgent(client_handle or f"{handle_prefix}-{uuid.uuid4().hex[:8]}", servers=nats_url or "",
                               connect_options=options, auth=auth)
        self._agent = agent
        self._store: StateStore | None = None
        self._listeners: list[Listener] = []
        self._started = False
        self._root = ScopedMemory(self, None)

    @property
    def handle(self) -> str:
        """The handle this client uses on the mesh (its actor scope)."""
        return self._agent.handle

    @property
    def agent(self) -> AsyncAgent:
        """The agent underneath."""
        return self._agent

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Join the mesh (standalone) and start the ``on_change`` listeners; idempotent."""
        if self._started:
            return self
        if self._owns_agent:
            try:
                await self._agent.start()
                await self._agent.register(ephemeral=True)
            except BaseException:
                await self._agent.close()
                raise
        else:
            await self._agent.start()
        self._started = True
        for listener in self._listeners:
            await listener.start()
        return self

    async def close(self) -> None:
        """Stop the listeners; leave the mesh if this client joined it (an agent given to it stays open)."""
        for listener in self._listeners:
            await listener.stop()
        self._listeners.clear()
        self._started = False
        if self._owns_agent:
            await self._agent.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- reports and questions ---------------------------------------------------------------------------

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
        """Report one event; returns ``{"status": "stored", "id": ..., "duplicate": ...}`` or an error object.
        The trace id defaults to the handled message's inside an ``on_message`` handler."""
        reply = await self.request(json.dumps(event), content_type="application/json",
                                   trace_id=trace_id or current_trace_id())
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

    # ---- shared memory: plumbing for ScopedMemory ----------------------------------------------------------

    def workflow_now(self) -> str | None:
        """The current workflow: the handled message's trace id inside a handler, else ``workflow_id``."""
        return current_trace_id() or self.workflow_id

    async def operation(self, payload: dict[str, Any], *, trace_id: str | None = None) -> dict[str, Any]:
        """Send ``{"op": ...}`` to @memory; returns the ok reply, raises the SharedMemoryError it names."""
        try:
            text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        except ValueError as exc:
            raise SharedMemoryError(f"{payload.get('op')}: {exc}") from None
        try:
            reply = await self.request(text, content_type="application/json", trace_id=trace_id)
        except PayloadTooLarge as exc:
            raise ValueTooLarge(f"{payload.get('op')} request is {exc.size} bytes, over the mesh's limit of "
                                f"{exc.limit}", field="value", size=exc.size, limit=exc.limit) from None
        try:
            decoded = json.loads(reply.payload)
        except ValueError:
            raise SharedMemoryError(f"@memory answered {payload.get('op')} with something that is not JSON "
                                    "(is the handle an @memory of this version?)") from None
        return raise_for_reply(decoded)

    async def write(self, payload: dict[str, Any], *, trace_id: str | None) -> dict[str, Any]:
        """A write: an operation with a ``deadline`` (now + timeout) after which @memory will not apply it,
        so a call that timed out cannot land later."""
        return await self.operation({**payload, "deadline": time.time() + self.timeout}, trace_id=trace_id)

    def _state(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(jetstream(self._agent))
        return self._store

    async def read_direct(self, addresses: Sequence[Address]) -> tuple[bool, Entry | None]:
        """``(True, entry or None)`` read straight from JetStream, or ``(False, None)`` when direct reads are
        off, denied by the server (then off for good, logged once) or the bucket is not there yet."""
        if not self._direct:
            return False, None
        try:
            entry = await guard(self._agent, self._state().first(addresses), "publish",
                                [f"$JS.API.DIRECT.GET.{STATE_STREAM}.>"])
        except PermissionDenied:
            log.info("%s may not read shared memory directly (the NATS server denies $JS.API.DIRECT.GET."
                     "%s); reading through @%s from now on", self.handle, STATE_STREAM, self.memory_handle)
            self._direct = False
            return False, None
        except SharedMemoryUnavailable:
            return False, None
        return True, entry

    def change_stream(self, patterns: str | Iterable[str], *, scope: Scope | None, scope_id: str | None,
                      since: float | datetime | None, from_seq: int | None) -> ChangeStream:
        """A change stream over this client's connection (see :class:`ChangeStream`); a subscription the
        server refuses raises PermissionDenied at once."""

        async def subscribe(subject: str, deliver: Any, **options: Any) -> Any:
            return await guard(self._agent, self._state().subscribe_changes(subject, deliver, **options), "publish",
                               [f"$JS.API.CONSUMER.CREATE.{CHANGES_STREAM}",
                                f"$JS.API.CONSUMER.CREATE.{CHANGES_STREAM}.>"])

        return ChangeStream(None, patterns, scope=scope, scope_id=scope_id, since=since, from_seq=from_seq,
                            subscribe=subscribe)

    def add_listener(self, handler: ChangeHandler, stream: ChangeStream) -> None:
        """Run ``handler`` over ``stream`` from :meth:`start` (at once when started) until :meth:`close`."""
        listener = Listener(handler, stream)
        self._listeners.append(listener)
        if self._started:
            task = asyncio.get_running_loop().create_task(listener.start())
            task.add_done_callback(_log_failed_start)

    # ---- shared memory: the unscoped view and the scoped ones ----------------------------------------------

    def session(self, session_id: str) -> ScopedMemory:
        """Shared memory in the session scope ``session_id`` (a user's conversation, say)."""
        return ScopedMemory(self, "session", session_id)

    def actor(self, handle: str | None = None) -> ScopedMemory:
        """Shared memory in an actor scope: this client's own handle by default (only it may write there)."""
        return ScopedMemory(self, "actor", handle)

    def workflow(self, workflow_id: str | None = None) -> ScopedMemory:
        """Shared memory in a workflow scope: ``workflow_id`` (a trace id), or the current one at each call."""
        return ScopedMemory(self, "workflow", workflow_id)

    @property
    def unscoped(self) -> ScopedMemory:
        """The unscoped view the methods below use (hierarchical reads, writes to the current workflow)."""
        return self._root

    @property
    def global_scope(self) -> ScopedMemory:
        """Shared memory in the global scope."""
        return ScopedMemory(self, "global")

    async def set(self, key: str, value: Any, *, ttl_s: float | None = None, if_version: int | None = None) -> int:
        """See :meth:`ScopedMemory.set`; in the current workflow."""
        return await self._root.set(key, value, ttl_s=ttl_s, if_version=if_version)

    async def get(self, key: str, default: Any = None) -> Any:
        """See :meth:`ScopedMemory.get`; workflow → session → actor → global."""
        return await self._root.get(key, default)

    async def get_entry(self, key: str) -> Entry | None:
        """See :meth:`ScopedMemory.get_entry`; workflow → session → actor → global."""
        return await self._root.get_entry(key)

    async def exists(self, key: str) -> bool:
        """See :meth:`ScopedMemory.exists`; workflow → session → actor → global."""
        return await self._root.exists(key)

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """See :meth:`ScopedMemory.delete`; in the current workflow."""
        return await self._root.delete(key, if_version=if_version)

    async def list_keys(self, prefix: str = "", *, limit: int | None = None) -> list[str]:
        """See :meth:`ScopedMemory.list_keys`; the current workflow's keys."""
        return await self._root.list_keys(prefix, limit=limit)

    async def history(self, key: str, *, limit: int = 20) -> list[ChangeEvent]:
        """See :meth:`ScopedMemory.history`; in the current workflow."""
        return await self._root.history(key, limit=limit)

    def watch(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
              from_seq: int | None = None) -> ChangeStream:
        """See :meth:`ScopedMemory.watch`; every scope."""
        return self._root.watch(patterns, since=since, from_seq=from_seq)

    def on_change(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
                  from_seq: int | None = None) -> Callable[[H], H]:
        """See :meth:`ScopedMemory.on_change`; every scope."""
        return self._root.on_change(patterns, since=since, from_seq=from_seq)

    # ---- vector memory -------------------------------------------------------------------------------------

    async def set_vector(self, key: str, embedding: Sequence[float] | np.ndarray,
                         metadata: dict[str, Any] | None = None, *, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        """Store ``embedding`` (your model's vector; L2-normalised on storage) under ``key`` in ``namespace``
        with ``metadata`` (a JSON object); returns ``{"namespace", "key", "dim", "replaced"}``. A namespace's
        dimension is fixed by its first vector: another raises DimensionMismatch."""
        payload = {"op": "vector.set", "key": validate_key(key), "embedding": _embedding(embedding),
                   "namespace": namespace}
        if metadata is not None:
            payload["metadata"] = metadata
        reply = await self.operation(payload)
        return {k: reply[k] for k in ("namespace", "key", "dim", "replaced")}

    async def similarity_search(self, query_embedding: Sequence[float] | np.ndarray, top_k: int = DEFAULT_TOP_K, *,
                                namespace: str = DEFAULT_NAMESPACE, filter: dict[str, Any] | None = None,
                                min_score: float | None = None) -> list[VectorHit]:
        """The ``top_k`` (1..1000) stored vectors nearest ``query_embedding`` by cosine, best first, among
        those whose metadata equals ``filter`` field by field, none scoring below ``min_score``."""
        payload: dict[str, Any] = {"op": "vector.search", "embedding": _embedding(query_embedding),
                                   "top_k": top_k, "namespace": namespace}
        if filter:
            payload["filter"] = filter
        if min_score is not None:
            payload["min_score"] = min_score
        reply = await self.operation(payload)
        return [VectorHit.from_json(hit) for hit in reply["results"]]

    async def delete_vector(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """Remove ``key``'s vector from ``namespace``; True if it was there."""
        reply = await self.operation({"op": "vector.delete", "key": validate_key(key), "namespace": namespace})
        return bool(reply["deleted"])

    # ---- working context and outcomes (meshflow's AgentMemory) -----------------------------------------------

    async def recent(self, n: int = 20, *, handle: str | None = None, trace_id: str | None = None) -> list[dict[str, Any]]:
        """The ``n`` (1..1000) latest reports, newest first, optionally only ``handle``'s or one trace's: each
        ``{"id", "message_id", "trace_id", "from_handle", "sender_verified", "event", "occurred_at", "payload"}``."""
        payload: dict[str, Any] = {"op": "recent", "n": n}
        if handle is not None:
            payload["handle"] = handle
        if trace_id is not None:
            payload["trace_id"] = trace_id
        return list((await self.operation(payload))["events"])

    async def context_string(self, max_chars: int = 2000, query: str | None = None, *, n: int = 10,
                             handle: str | None = None, trace_id: str | None = None) -> str:
        """Prompt-ready text of at most ``max_chars`` characters: the ``n`` latest reports (of ``handle`` or
        ``trace_id`` when given), then, with ``query``, the reports most relevant to it (hybrid search), one
        line each, newest first, each report once. See :func:`memory_agent.shared.context.format_context`."""
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise SharedMemoryError(f"max_chars must be a positive whole number, not {max_chars!r}",
                                    field="max_chars")
        latest = await self.recent(n, handle=handle, trace_id=trace_id)
        relevant: list[dict[str, Any]] = []
        if query:
            answer = await self.ask_structured({"query": query, "mode": "search", "limit": n})
            if "events" not in answer:
                raise SharedMemoryError(str(answer.get("error", "the search failed")), field="query")
            relevant = list(answer["events"])
        return format_context(latest, relevant, max_chars=max_chars, query=query)

    async def record_outcome(self, node_id: str, success: bool, *, confidence: float | None = None,
                             verifier_score: float | None = None, trace_id: str | None = None,
                             **details: Any) -> int:
        """Append an outcome to the procedural ledger: a report ``{"event": "outcome", "node_id", "success",
        "confidence", "verifier_score", **details}`` (trace id: the handled message's inside a handler).
        Returns its event id; raises ReportError when @memory refuses it."""
        if not isinstance(node_id, str) or not node_id.strip():
            raise ReportError("node_id must be a non-empty string naming the step or node", field="node_id")
        if not isinstance(success, bool):
            raise ReportError(f"success must be true or false, not {success!r}", field="success")
        event: dict[str, Any] = {"event": "outcome", "node_id": node_id, "success": success}
        for name, value in (("confidence", confidence), ("verifier_score", verifier_score)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ReportError(f"{name} must be a finite number, not {value!r}", field=name)
            event[name] = float(value)
        clash = sorted(set(details) & {"event", "node_id", "success", "confidence", "verifier_score"})
        if clash:
            raise ReportError(f"details may not repeat {', '.join(clash)}", field=clash[0])
        event.update(details)
        reply = await self.report(event, trace_id=trace_id)
        if reply.get("status") != "stored":
            raise ReportError(str(reply.get("error", "@memory refused the outcome")))
        return int(reply["id"])

    async def outcomes(self, node_id: str | None = None, *, since: float | str | None = None) -> list[dict[str, Any]]:
        """Per node: ``{"node_id", "count", "successes", "judged", "success_rate", "mean_confidence",
        "mean_verifier_score", "first_at", "last_at"}`` of the outcomes since ``since`` (unix seconds or
        ISO-8601), one node's or every node's."""
        payload: dict[str, Any] = {"op": "outcomes"}
        if node_id is not None:
            payload["node_id"] = node_id
        if since is not None:
            payload["since"] = since
        return list((await self.operation(payload))["nodes"])


def _embedding(value: Sequence[float] | np.ndarray) -> Any:
    """An embedding for the wire: checked here (parse_embedding's rules), numpy arrays as base64 float32."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value, dtype="<f4").reshape(-1)
        encoded: Any = {"base64": base64.b64encode(array.tobytes()).decode("ascii")}
    elif isinstance(value, (str, bytes, dict)):
        encoded = value  # refused just below, with the message a remote caller would get
    else:
        encoded = [v.item() if isinstance(v, np.generic) else v for v in value]
    parse_embedding(encoded)
    return encoded


def _log_failed_start(task: Any) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("an on_change listener could not start: %s", task.exception())
