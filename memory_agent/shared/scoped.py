"""The SDK's view of shared memory in one scope: AgentField's ``memory`` API under our names.

``client.session("s-1")``, ``client.actor()``, ``client.workflow("t-81")`` and ``client.global_scope`` are
:class:`ScopedMemory` objects; the client itself behaves as the unscoped one, where

* ``get``/``exists`` look narrowest first: workflow → session → actor → global (AgentField's order), with
  the workflow being the trace id of the message the calling agent is handling (``mesh.context``), else the
  client's ``workflow_id``; the session the client's ``session_id``; the actor the client's own handle;
* ``set``/``delete``/``list_keys``/``history`` act on that workflow (an error names the fix when there is
  none: call inside an ``on_message`` handler, or use ``client.workflow(id)``);
* ``on_change``/``watch`` see every scope.

Reads go straight to the JetStream KV bucket when the agent may (one direct get per scope, all at once),
else through @memory; writes always go through @memory, which checks them and publishes the change.
Keys and values are checked here first, so a bad one is refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from memory_agent.errors import SharedMemoryError
from memory_agent.shared.constants import SCOPES, Scope
from memory_agent.shared.keys import Address, validate_key, validate_scope_id
from memory_agent.shared.watch import ChangeHandler, ChangeStream
from memory_agent.shared.wire import ChangeEvent, Entry, encode_value

if TYPE_CHECKING:
    from memory_agent.client import MemoryClient

__all__ = ["ScopedMemory"]

H = TypeVar("H", bound=ChangeHandler)
_NO_WORKFLOW = (
    "no workflow to use: this call is not inside an on_message handler (whose message's trace id is the "
    "workflow) and the client has no workflow_id; use client.workflow(\"<trace id>\"), pass workflow_id= to "
    "MemoryClient, or pick another scope (client.session(id), client.actor(), client.global_scope)"
)


class ScopedMemory:
    """Shared memory in ``scope`` with ``scope_id`` (``None``: the client's current one, see the module
    docstring; ``scope`` ``None``: the unscoped view). Made by :class:`~memory_agent.client.MemoryClient`.

    Every method raises :class:`~memory_agent.errors.SharedMemoryError` (or a subclass: ``VersionConflict``,
    ``SharedAccessDenied``, ``ValueTooLarge``, ``SharedMemoryUnavailable``) for what @memory or the checks
    here refused, and mesh errors (``MeshTimeout``, ``HandleNotFound``) when @memory cannot be reached.
    """

    def __init__(self, client: MemoryClient, scope: Scope | None, scope_id: str | None = None) -> None:
        self._client = client
        self._scope = scope
        self._scope_id = None if scope_id is None else validate_scope_id(scope or "workflow", scope_id)

    def __repr__(self) -> str:
        return f"ScopedMemory(scope={self._scope!r}, scope_id={self._scope_id!r})"

    @property
    def scope(self) -> Scope | None:
        """The scope, ``None`` for the unscoped view."""
        return self._scope

    @property
    def scope_id(self) -> str | None:
        """The scope id as given (``None``: resolved at each call)."""
        return self._scope_id

    def target(self) -> tuple[Scope, str]:
        """The ``(scope, scope_id)`` a write goes to now; raises SharedMemoryError when there is no workflow."""
        scope = self._scope or "workflow"
        if self._scope_id is not None:
            return scope, self._scope_id
        if scope == "workflow":
            workflow = self._client.workflow_now()
            if workflow is None:
                raise SharedMemoryError(_NO_WORKFLOW, field="scope_id")
            return "workflow", workflow
        if scope == "actor":
            return "actor", self._client.handle
        return scope, ""

    def _lookup(self, key: str) -> list[Address]:
        if self._scope is not None:
            return [Address(*self.target(), key)]
        ids: dict[Scope, str | None] = {"workflow": self._client.workflow_now(), "session": self._client.session_id,
                                        "actor": self._client.handle, "global": ""}
        return [Address(scope, validate_scope_id(scope, ids[scope]), key) for scope in SCOPES
                if ids[scope] is not None]

    def _scope_fields(self) -> dict[str, Any]:
        scope, scope_id = self.target()
        return {"scope": scope} if scope == "global" else {"scope": scope, "scope_id": scope_id}

    # ---- key-value ---------------------------------------------------------------------------------------

    async def set(self, key: str, value: Any, *, ttl_s: float | None = None, if_version: int | None = None) -> int:
        """Store ``value`` (any JSON value) under ``key``; returns its new version.

        ``ttl_s``: seconds until it expires (whole seconds, at least 1; an ``expire`` change is published
        then). ``if_version``: compare-and-set, write only if the key is at that version (0 = absent);
        otherwise raises VersionConflict with ``.current``. Raises ValueTooLarge past @memory's
        ``max_value_bytes``, SharedAccessDenied for another agent's actor scope.
        """
        key = validate_key(key)
        encode_value(value)
        payload: dict[str, Any] = {"op": "kv.set", "key": key, "value": value, **self._scope_fields()}
        if ttl_s is not None:
            payload["ttl_s"] = ttl_s
        if if_version is not None:
            payload["if_version"] = if_version
        reply = await self._client.write(payload, trace_id=self._trace())
        return int(reply["version"])

    async def get_entry(self, key: str) -> Entry | None:
        """The stored value of ``key`` with its scope, version, time and writer, or ``None``."""
        key = validate_key(key)
        addresses = self._lookup(key)
        done, entry = await self._client.read_direct(addresses)
        if done:
            return entry
        payload: dict[str, Any] = {"op": "kv.get", "key": key}
        if self._scope is not None:
            payload.update(self._scope_fields())
        elif self._client.session_id is not None:
            payload["session_id"] = self._client.session_id
        reply = await self._client.operation(payload, trace_id=self._trace())
        return Entry.from_json(reply) if reply.get("found") else None

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (narrowest scope first when unscoped), or ``default``."""
        entry = await self.get_entry(key)
        return default if entry is None else entry.value

    async def exists(self, key: str) -> bool:
        """True when ``key`` holds a value (in any scope of the lookup, when unscoped)."""
        return await self.get_entry(key) is not None

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; True if it held a value. ``if_version`` as in :meth:`set`."""
        key = validate_key(key)
        payload: dict[str, Any] = {"op": "kv.delete", "key": key, **self._scope_fields()}
        if if_version is not None:
            payload["if_version"] = if_version
        reply = await self._client.write(payload, trace_id=self._trace())
        return bool(reply["deleted"])

    async def list_keys(self, prefix: str = "", *, limit: int | None = None) -> list[str]:
        """The keys of this scope (the current workflow when unscoped) starting with ``prefix``, sorted;
        all of them, or the first ``limit``. Pages of up to 1000 are fetched as needed."""
        keys: list[str] = []
        cursor: str | None = None
        while limit is None or len(keys) < limit:
            page = 1000 if limit is None else min(1000, limit - len(keys))
            payload: dict[str, Any] = {"op": "kv.list", "prefix": prefix, "limit": page, **self._scope_fields()}
            if cursor is not None:
                payload["cursor"] = cursor
            reply = await self._client.operation(payload, trace_id=self._trace())
            keys.extend(reply["keys"])
            cursor = reply.get("next_cursor")
            if cursor is None:
                break
        return keys

    async def history(self, key: str, *, limit: int = 20) -> list[ChangeEvent]:
        """The last ``limit`` changes of ``key`` in this scope, newest first (as far as the change stream
        keeps them: ``[shared] history_per_key`` and ``changes_max_age``)."""
        key = validate_key(key)
        reply = await self._client.operation({"op": "kv.history", "key": key, "limit": limit,
                                              **self._scope_fields()}, trace_id=self._trace())
        return [ChangeEvent.from_json(c, seq=int(c.get("seq", 0))) for c in reply["changes"]]

    def _trace(self) -> str | None:
        return self._client.workflow_now()

    # ---- changes -----------------------------------------------------------------------------------------

    def _stream_scope(self) -> tuple[Scope | None, str | None]:
        if self._scope is None:
            return None, None
        if self._scope == "workflow" and self._scope_id is None:
            return "workflow", self._client.workflow_now()  # None: every workflow
        return self.target()

    def watch(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
              from_seq: int | None = None) -> ChangeStream:
        """A :class:`~memory_agent.shared.watch.ChangeStream` of changes to keys matching ``patterns`` in
        this scope (every scope when unscoped): ``async with client.watch("ticket:*") as changes: async for
        change in changes: ...``. ``since`` (seconds since the epoch or a datetime) or ``from_seq`` (a stream
        sequence) replay what a late subscriber missed, as far as the change stream keeps it."""
        scope, scope_id = self._stream_scope()
        return self._client.change_stream(patterns, scope=scope, scope_id=scope_id, since=since, from_seq=from_seq)

    def on_change(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
                  from_seq: int | None = None) -> Callable[[H], H]:
        """Decorator (AgentField's): call the function with each :class:`ChangeEvent` of a key matching
        ``patterns`` (``"customer_*"``, ``"ticket:*:sentiment"``, ``["user_*.preferences",
        "user_*.settings"]``), in order, until the client closes. ``async def`` handlers are awaited, plain
        functions run in a worker thread. Starts now if the client is started, else when it starts."""
        stream = self.watch(patterns, since=since, from_seq=from_seq)

        def decorate(handler: H) -> H:
            self._client.add_listener(handler, stream)
            return handler

        return decorate
