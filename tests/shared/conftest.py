"""Fixtures for shared memory: a real @memory daemon (real clock: TTLs and deadlines are the server's and
the wall clock's) on the test's nats-server, and registered agents with a MemoryClient each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from memory_agent.client import MemoryClient
from memory_agent.daemon import MemoryDaemon
from mesh import AsyncAgent
from tests.conftest import DaemonFactory

ClientFactory = Callable[..., Awaitable[MemoryClient]]


@pytest.fixture
async def memory(nats_url: str, make_daemon: DaemonFactory) -> MemoryDaemon:
    """A started @memory on the test's server."""
    return await make_daemon(nats_url, clock=time.time)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[ClientFactory]:
    """``await client("deploy", **MemoryClient options)``: a registered agent with a started MemoryClient on it;
    all are closed at teardown."""
    made: list[tuple[AsyncAgent, MemoryClient]] = []

    async def make(handle: str, **options: Any) -> MemoryClient:
        agent = AsyncAgent(handle, servers=nats_url)
        await agent.start()
        await agent.register()
        options.setdefault("timeout", 10.0)
        memory_client = MemoryClient(agent=agent, **options)
        made.append((agent, memory_client))
        return await memory_client.start()

    yield make
    for agent, memory_client in reversed(made):
        await memory_client.close()
        await agent.close()


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``timeout`` seconds."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        await asyncio.sleep(0.05)
