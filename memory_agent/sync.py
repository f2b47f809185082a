"""SyncMemoryClient: the MemoryClient API, blocking, for scripts and sync agents. It wraps the async client
(each method runs the async one on an event loop thread and waits); nothing is implemented twice.

Standalone, the loop is a private thread of its own. With ``agent=`` (a :class:`mesh.SyncAgent`) it is that
agent's loop, so the client shares its handle and connection, and a call from the agent's sync
``on_message`` handler keeps the handled message's trace id as its workflow (the caller's
:mod:`mesh.context` is carried onto the loop). ``on_change`` handlers should be plain functions: they run
on worker threads and may call this client's blocking methods.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from memory_agent.client import MemoryClient
from memory_agent.shared.constants import DEFAULT_NAMESPACE, DEFAULT_TOP_K
from memory_agent.shared.scoped import ScopedMemory
from memory_agent.shared.watch import ChangeHandler, ChangeStream
from memory_agent.shared.wire import ChangeEvent, Entry, VectorHit
from mesh import NatsAuth, SyncAgent
from mesh.access import sync_runner
from mesh.context import current_message, reset_current_message, set_current_message
from mesh.errors import MeshError
from mesh.loop_thread import LoopThread

__all__ = ["SyncChangeStream", "SyncMemoryClient", "SyncScopedMemory"]

T = TypeVar("T")
H = TypeVar("H", bound=ChangeHandler)
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def _carrying_context(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro`` run with the calling thread's current mesh message (the workflow of a sync handler)."""
    message = current_message()

    async def run() -> T:
        token = set_current_message(message)
        try:
            return await coro
        finally:
            reset_current_message(token)

    return run()


class SyncChangeStream:
    """Blocking view of a :class:`~memory_agent.shared.watch.ChangeStream`: ``with client.watch("x*") as s:
    for event in s: ...``; :meth:`next` takes a timeout."""

    def __init__(self, stream: ChangeStream, run: Runner) -> None:
        self._stream = stream
        self._run = run

    def start(self) -> Self:
        self._run(self._stream.start())
        return self

    def stop(self) -> None:
        self._run(self._stream.stop())

    def next(self, timeout: float | None = None) -> ChangeEvent | None:
        """The next event, or ``None`` once stopped or after ``timeout`` seconds."""
        result: ChangeEvent | None = self._run(self._stream.next(timeout))
        return result

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> ChangeEvent:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncScopedMemory:
    """Blocking twin of :class:`~memory_agent.shared.scoped.ScopedMemory`; same methods, same errors."""

    def __init__(self, scoped: ScopedMemory, run: Runner) -> None:
        self._scoped = scoped
        self._run = run

    def set(self, key: str, value: Any, *, ttl_s: float | None = None, if_version: int | None = None) -> int:
        """See ScopedMemory.set."""
        version: int = self._run(self._scoped.set(key, value, ttl_s=ttl_s, if_version=if_version))
        return version

    def get(self, key: str, default: Any = None) -> Any:
        """See ScopedMemory.get."""
        return self._run(self._scoped.get(key, default))

    def get_entry(self, key: str) -> Entry | None:
        """See ScopedMemory.get_entry."""
        entry: Entry | None = self._run(self._scoped.get_entry(key))
        return entry

    def exists(self, key: str) -> bool:
        """See ScopedMemory.exists."""
        return bool(self._run(self._scoped.exists(key)))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """See ScopedMemory.delete."""
        return bool(self._run(self._scoped.delete(key, if_version=if_version)))

    def list_keys(self, prefix: str = "", *, limit: int | None = None) -> list[str]:
        """See ScopedMemory.list_keys."""
        keys: list[str] = self._run(self._scoped.list_keys(prefix, limit=limit))
        return keys

    def history(self, key: str, *, limit: int = 20) -> list[ChangeEvent]:
        """See ScopedMemory.history."""
        changes: list[ChangeEvent] = self._run(self._scoped.history(key, limit=limit))
        return changes

    def watch(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
              from_seq: int | None = None) -> SyncChangeStream:
        """See ScopedMemory.watch."""
        return SyncChangeStream(self._scoped.watch(patterns, since=since, from_seq=from_seq), self._run)

    def on_change(self, patterns: str | Iterable[str], *, since: float | datetime | None = None,
                  from_seq: int | None = None) -> Callable[[H], H]:
        """See ScopedMemory.on_change (plain functions run on worker threads)."""
        decorate = self._scoped.on_change(patterns, since=since, from_seq=from_seq)

        def register(handler: H) -> H:
            async def add() -> H:  # on the loop: a started client starts the listener there
                return decorate(handler)

            result: H = self._run(add())
            return result

        return register


class SyncMemoryClient(SyncScopedMemory):
    """Blocking twin of :class:`~memory_agent.client.MemoryClient`: ``SyncMemoryClient(url)`` or
    ``SyncMemoryClient(agent=sync_agent)``; the other options are MemoryClient's."""

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        agent: SyncAgent | None = None,
        handle: str = "memory",
        timeout: float = 30.0,
        connect_options: dict[str, Any] | None = None,
        auth: NatsAuth | None = None,
        client_handle: str | None = None,
        session_id: str | None = None,
        workflow_id: str | None = None,
        direct_reads: bool = True,
    ) -> None:
        self._thread: LoopThread | None = None
        if agent is not None:
            runner: Runner = sync_runner(agent)
            self._client = MemoryClient(agent=agent.async_agent, handle=handle, timeout=timeout,
                                        session_id=session_id, workflow_id=workflow_id, direct_reads=direct_reads)
        else:
            thread = self._thread = LoopThread("memory-client-sync")

            def runner(coro: Coroutine[Any, Any, Any]) -> Any:
                return thread.run(coro, owner="SyncMemoryClient")
            self._client = MemoryClient(nats_url, handle=handle, timeout=timeout, connect_options=connect_options,
                                        auth=auth, client_handle=client_handle, session_id=session_id,
                                        workflow_id=workflow_id, direct_reads=direct_reads)
        self._closed = False

        def run(coro: Coroutine[Any, Any, Any]) -> Any:
            if self._closed:
                coro.close()
                raise MeshError("the memory client is closed")
            return runner(_carrying_context(coro))

        super().__init__(self._client.unscoped, run)

    @property
    def handle(self) -> str:
        """The handle this client uses on the mesh."""
        return self._client.handle

    @property
    def async_client(self) -> MemoryClient:
        """The MemoryClient underneath (its coroutines must run on this client's loop)."""
        return self._client

    def start(self) -> Self:
        """See MemoryClient.start."""
        self._run(self._client.start())
        return self

    def close(self) -> None:
        """Close the client (and its own loop thread); idempotent."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            if self._thread is not None:
                self._thread.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _scoped_view(self, scoped: ScopedMemory) -> SyncScopedMemory:
        return SyncScopedMemory(scoped, self._run)

    def session(self, session_id: str) -> SyncScopedMemory:
        """See MemoryClient.session."""
        return self._scoped_view(self._client.session(session_id))

    def actor(self, handle: str | None = None) -> SyncScopedMemory:
        """See MemoryClient.actor."""
        return self._scoped_view(self._client.actor(handle))

    def workflow(self, workflow_id: str | None = None) -> SyncScopedMemory:
        """See MemoryClient.workflow."""
        return self._scoped_view(self._client.workflow(workflow_id))

    @property
    def global_scope(self) -> SyncScopedMemory:
        """See MemoryClient.global_scope."""
        return self._scoped_view(self._client.global_scope)

    def ask(self, question: str) -> str:
        """See MemoryClient.ask."""
        answer: str = self._run(self._client.ask(question))
        return answer

    def ask_structured(self, query: dict[str, Any]) -> dict[str, Any]:
        """See MemoryClient.ask_structured."""
        return dict(self._run(self._client.ask_structured(query)))

    def report(self, event: dict[str, Any], *, trace_id: str | None = None) -> dict[str, Any]:
        """See MemoryClient.report."""
        return dict(self._run(self._client.report(event, trace_id=trace_id)))

    def stats(self) -> dict[str, Any]:
        """See MemoryClient.stats."""
        return dict(self._run(self._client.stats()))

    def set_vector(self, key: str, embedding: Sequence[float] | np.ndarray, metadata: dict[str, Any] | None = None,
                   *, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
        """See MemoryClient.set_vector."""
        return dict(self._run(self._client.set_vector(key, embedding, metadata, namespace=namespace)))

    def similarity_search(self, query_embedding: Sequence[float] | np.ndarray, top_k: int = DEFAULT_TOP_K, *,
                          namespace: str = DEFAULT_NAMESPACE, filter: dict[str, Any] | None = None,
                          min_score: float | None = None) -> list[VectorHit]:
        """See MemoryClient.similarity_search."""
        hits: list[VectorHit] = self._run(self._client.similarity_search(
            query_embedding, top_k, namespace=namespace, filter=filter, min_score=min_score))
        return hits

    def delete_vector(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> bool:
        """See MemoryClient.delete_vector."""
        return bool(self._run(self._client.delete_vector(key, namespace=namespace)))

    def recent(self, n: int = 20, *, handle: str | None = None, trace_id: str | None = None) -> list[dict[str, Any]]:
        """See MemoryClient.recent."""
        return list(self._run(self._client.recent(n, handle=handle, trace_id=trace_id)))

    def context_string(self, max_chars: int = 2000, query: str | None = None, *, n: int = 10,
                       handle: str | None = None, trace_id: str | None = None) -> str:
        """See MemoryClient.context_string."""
        text: str = self._run(self._client.context_string(max_chars, query, n=n, handle=handle, trace_id=trace_id))
        return text

    def record_outcome(self, node_id: str, success: bool, *, confidence: float | None = None,
                       verifier_score: float | None = None, trace_id: str | None = None, **details: Any) -> int:
        """See MemoryClient.record_outcome."""
        return int(self._run(self._client.record_outcome(node_id, success, confidence=confidence,
                                                         verifier_score=verifier_score, trace_id=trace_id,
                                                         **details)))

    def outcomes(self, node_id: str | None = None, *, since: float | str | None = None) -> list[dict[str, Any]]:
        """See MemoryClient.outcomes."""
        return list(self._run(self._client.outcomes(node_id, since=since)))
