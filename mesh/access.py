"""The NATS connection under an agent, for libraries built on the mesh.

Shared memory reads JetStream KV directly and subscribes to change streams over the agent's own
connection (one login, the agent's permissions); these functions hand it out without widening
:class:`~mesh.agent.AsyncAgent`'s API. :func:`guard` gives such operations the agent's immediate
``PermissionDenied`` instead of a timeout when the server refuses a subject.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from .agent import AsyncAgent
from .connection import Operation
from .errors import MeshError
from .sync import SyncAgent

__all__ = ["connection", "guard", "jetstream", "sync_runner"]

T = TypeVar("T")


def connection(agent: AsyncAgent) -> NATS:
    """The agent's NATS connection; raises MeshError before ``start()`` and after ``close()``."""
    nc = agent._nc
    if nc is None or agent._closed:
        raise MeshError(f"agent {agent.handle!r} is not started: call start() (or use it as a context manager)")
    return nc


def jetstream(agent: AsyncAgent) -> JetStreamContext:
    """The agent's JetStream context; raises MeshError before ``start()`` and after ``close()``."""
    connection(agent)
    js = agent._js
    assert js is not None
    return js


async def guard(agent: AsyncAgent, op: Awaitable[T], operation: Operation, subjects: Iterable[str]) -> T:
    """Await ``op``; raise PermissionDenied at once if the server denies ``operation`` (``"publish"`` or
    ``"subscribe"``) on one of ``subjects`` (exact, or a prefix ending in ``.>``)."""
    return await agent._denials.guard(op, operation, subjects)


def sync_runner(agent: SyncAgent) -> Callable[[Coroutine[Any, Any, T]], T]:
    """A function that runs a coroutine on ``agent``'s loop thread and returns its result (blocking)."""
    return agent._call
