"""Root fixtures: a real nats-server with JetStream per test (free port, store in tmp_path)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh import AsyncAgent
from mesh.server import NatsServer


@pytest.fixture(scope="session", autouse=True)
def _mesh_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Agents keep their claim files (mesh.claim) in a directory of this test run, not in the home
    directory; subprocesses started by tests inherit it."""
    previous = os.environ.get("MESH_STATE_DIR")
    os.environ["MESH_STATE_DIR"] = str(tmp_path_factory.mktemp("mesh-state"))
    yield
    if previous is None:
        os.environ.pop("MESH_STATE_DIR", None)
    else:
        os.environ["MESH_STATE_DIR"] = previous


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started NatsServer (``.url``, ``.stop()``, ``.start()`` on the same port and store).

    If the server died during the test, its last log lines are written to stderr (shown in the
    failure report) and the test fails.
    """
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        died = server.pid is not None and not server.running
        if died:
            sys.stderr.write(f"nats-server died during the test; log tail:\n{server.log_tail()}\n")
        server.stop()
    if died:
        pytest.fail(f"nats-server died during the test:\n{server.log_tail()}")


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The URL (``nats://127.0.0.1:<port>``) of the test's nats-server."""
    return nats_server.url


@pytest.fixture
async def mesh_agent(nats_url: str) -> AsyncIterator[Callable[..., Awaitable[AsyncAgent]]]:
    """Factory: ``await mesh_agent("handle", register=True, **AsyncAgent_options)`` -> a started
    AsyncAgent on the test server (registered unless ``register=False``); all are closed at teardown."""
    agents: list[AsyncAgent] = []

    async def make(handle: str, *, register: bool = True, **options: Any) -> AsyncAgent:
        options.setdefault("servers", nats_url)
        agent = AsyncAgent(handle, **options)
        agents.append(agent)
        await agent.start()
        if register:
            await agent.register()
        return agent

    try:
        yield make
    finally:
        for agent in reversed(agents):
            await agent.close()
