"""``memory-agent mcp``: @memory's job as Model Context Protocol tools, over stdio.

Agents built on MCP (coding and desktop agents) cannot open mesh sessions; this server can. It joins
the mesh as a client, like the CLI (:class:`memory_agent.client.MemoryClient`, an ephemeral handle
``mcp-<8 hex>`` unless ``--as``/``[nats] client_handle`` names one), and turns each tool call into a
message to @memory:

* ``report``: one event (``{"event", "service", "trace_id", "occurred_at", ...details}``), returns
  ``{"status": "stored", "id", "duplicate"}``;
* ``ask``: a question in plain language, returns @memory's plain-text answer;
* ``search``: the ranked hybrid search with a time window and filters (a structured question with
  ``"mode": "search"``), returns ``{"answer", "events", "window"}``;
* ``timeline``: every event of a trace in time order.

The shared-memory tools ``kv_get``/``kv_set`` join them once @memory serves shared working state: they
are registered in :func:`build_server` beside these four (the names are reserved in :data:`TOOLS`).

Refusals (bad input, @memory unreachable or silent) come back as tool errors whose text says what to
fix; nothing is written to stdout but the protocol (logs go to stderr).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memory_agent import __version__
from memory_agent.errors import QueryError, SharedMemoryError
from mesh.errors import MeshError

if TYPE_CHECKING:
    from memory_agent.client import MemoryClient

__all__ = ["TOOLS", "build_server"]

log = logging.getLogger(__name__)

#: The tools served.
TOOLS = ("report", "ask", "search", "timeline", "kv_get", "kv_set")

_INSTRUCTIONS = (
    "@memory remembers what agents report (a rollback, a flaky test, an anomaly, a root cause, each with a "
    "trace id) and answers questions about it, naming the reports an answer rests on. Report what you decided "
    "or observed with `report`; ask in plain language with `ask` ('What rollbacks happened in the last 7 "
    "days?', 'Why did production roll back on Friday?'); use `search` for ranked results with a time window "
    "and filters, and `timeline` for every event of one trace in time order. Share working state with other "
    "agents with `kv_set`/`kv_get` (scopes: workflow = a trace id, session, actor = an agent's handle, global)."
)


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("status") == "error":
        raise ToolError(str(reply.get("error", "@memory refused the request")))
    return reply


def build_server(client: MemoryClient) -> MCPServer[Any]:
    """An MCP server whose tools talk to @memory through ``client`` (started and joined by the caller)."""
    server: MCPServer[Any] = MCPServer(name="memory", title="@memory", instructions=_INSTRUCTIONS,
                                       version=__version__)

    async def call(what: str, coro: Any) -> Any:
        try:
            return await coro
        except MeshError as exc:
            log.warning("%s: %s", what, type(exc).__name__)
            raise ToolError(f"@{client.memory_handle} did not answer ({type(exc).__name__}: {exc}); is the "
                            "daemon running (memory-agent check)?") from None

    @server.tool(description="Report one event to @memory: what happened (`event`, e.g. 'rollback', "
                             "'flaky_test', 'anomaly', 'root_cause'), where (`service`), the trace it belongs to "
                             "(`trace_id`), when (`occurred_at`, ISO-8601; default now), and any other fields "
                             "in `details`. Returns the stored event's id.")
    async def report(event: str, service: str | None = None, trace_id: str | None = None,
                     occurred_at: str | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {**(details or {}), "event": event}
        for key, value in (("service", service), ("trace_id", trace_id), ("occurred_at", occurred_at)):
            if value is not None:
                payload[key] = value
        return _checked(await call("report", client.report(payload, trace_id=trace_id)))

    @server.tool(description="Ask @memory a question in plain language, e.g. 'What rollbacks happened in the "
                             "last 7 days?', 'How many flaky tests this week?', 'Why did production roll back on "
                             "Friday?'. The answer names the events it rests on as [#id].")
    async def ask(question: str) -> str:
        if not question.strip():
            raise ToolError("the question is empty: ask e.g. 'What rollbacks happened today?'")
        try:
            text: str = await call("ask", client.ask(question))
        except QueryError as exc:
            raise ToolError(str(exc)) from None
        return text

    @server.tool(description="Ranked search of @memory's events (full text and embeddings), narrowed by a time "
                             "window (`since`/`until`: ISO-8601) and filters (`event`, `service`, `from_handle`, "
                             "`trace_id`: lists of exact values). Returns the best `limit` events with their fields.")
    async def search(query: str, since: str | None = None, until: str | None = None,
                     event: list[str] | None = None, service: list[str] | None = None,
                     from_handle: list[str] | None = None, trace_id: list[str] | None = None,
                     limit: int = 20) -> dict[str, Any]:
        filters = {k: v for k, v in (("event", event), ("service", service), ("from_handle", from_handle),
                                     ("trace_id", trace_id)) if v}
        request: dict[str, Any] = {"query": query, "mode": "search", "limit": limit, "filters": filters}
        if since:
            request["since"] = since
        if until:
            request["until"] = until
        return _checked(await call("search", client.ask_structured(request)))

    @server.tool(description="Every event of one trace in time order, with the handles that reported them.")
    async def timeline(trace_id: str, limit: int | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"query": f"timeline of trace {trace_id}", "filters": {"trace_id": trace_id}}
        if limit is not None:
            request["limit"] = limit
        return _checked(await call("timeline", client.ask_structured(request)))

    def scoped(scope: str | None, scope_id: str | None) -> Any:
        if scope is None:
            if scope_id is not None:
                raise ToolError('"scope_id" needs a "scope" (workflow, session, actor or global)')
            return client.unscoped
        if scope == "global":
            if scope_id is not None:
                raise ToolError('the global scope has no "scope_id": leave it out')
            return client.global_scope
        if scope == "actor":
            return client.actor(scope_id)
        if scope in ("workflow", "session") and not scope_id:
            raise ToolError(f'the {scope} scope needs its "scope_id" ('
                            + ("the trace id" if scope == "workflow" else "the session's id") + ")")
        if scope == "workflow":
            return client.workflow(scope_id)
        if scope == "session":
            return client.session(str(scope_id))
        raise ToolError(f'"scope" must be one of workflow, session, actor, global; not {scope[:40]!r}')

    async def shared(what: str, coro: Any) -> Any:
        try:
            return await call(what, coro)
        except SharedMemoryError as exc:
            raise ToolError(str(exc)) from None

    @server.tool(description="Read a value of the memory agents share. With `scope` (workflow: `scope_id` is "
                             "a trace id; session: a session id; actor: an agent's handle, default yours; global) "
                             "from that scope only; without it, the narrowest scope holding the key. Returns "
                             "`found` and, when found, the value with its scope, version, time and writer.")
    async def kv_get(key: str, scope: str | None = None, scope_id: str | None = None) -> dict[str, Any]:
        entry = await shared("kv_get", scoped(scope, scope_id).get_entry(key))
        return {"found": False, "key": key} if entry is None else {"found": True, **entry.to_json()}

    @server.tool(description="Store a JSON value under `key` in the memory agents share, in `scope` (workflow "
                             "with the trace id as `scope_id`, session with its id, actor: your own handle, global "
                             "if @memory lets you). `ttl_s`: seconds until it expires. `if_version`: write only "
                             "if the key is at that version (0 = absent), to update without losing another "
                             "agent's write. Returns the new `version`.")
    async def kv_set(key: str, value: Any, scope: str, scope_id: str | None = None, ttl_s: float | None = None,
                     if_version: int | None = None) -> dict[str, Any]:
        view = scoped(scope, scope_id)
        version = await shared("kv_set", view.set(key, value, ttl_s=ttl_s, if_version=if_version))
        return {"status": "ok", "key": key, "scope": scope, "scope_id": scope_id, "version": version}

    return server
