"""Root fixtures, defined once for every test package: a real nats-server with JetStream per test (free
port, store in tmp_path), agents on it, and real @memory daemons with a small deterministic embedder and
a fixed clock (:data:`NOW`)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.config import Config
from memory_agent.daemon import MemoryDaemon
from memory_agent.embedding.hashing import HashingEmbedder
from mesh import AsyncAgent
from mesh.server import NatsServer

# Every daemon a test starts (in this process or as a `memory-agent run` subprocess, which inherits the
# environment) listens for HTTP on a free port, never on the default 9464 that another run may hold.
os.environ.setdefault("MEMORY_AGENT_HTTP__LISTEN", "127.0.0.1:0")

#: "Now" in every test that fixes the clock: Saturday 2026-11-21 10:00 UTC.
NOW_DT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
#: :data:`NOW_DT` in seconds since the epoch, UTC.
NOW = NOW_DT.timestamp()

DaemonFactory = Callable[..., Awaitable[MemoryDaemon]]


class CountingEmbedder(HashingEmbedder):
    """The small deterministic embedder, counting the texts it encodes (to prove nothing is re-embedded)."""

    def __init__(self) -> None:
        super().__init__(dim=64, name="hashing-64")
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        return super().encode(texts)


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


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """``await make_daemon(nats_url, embedder=None, clock=lambda: NOW, **config)``: a started MemoryDaemon on
    ``tmp_path/data`` (the 64-dim hashing embedder unless one is given); all are closed after the test.
    Request the server's fixture before this one, so that the server outlives the daemons at teardown."""
    started: list[MemoryDaemon] = []

    async def start(nats_url: str, *, embedder: HashingEmbedder | None = None,
                    clock: Callable[[], float] = lambda: NOW, **overrides: Any) -> MemoryDaemon:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "nats_url": nats_url, "index_save_interval": 0.5}
        values.update(overrides)
        daemon = MemoryDaemon(Config(**values), embedder=embedder or CountingEmbedder(), clock=clock)
        started.append(daemon)
        await daemon.start()
        return daemon

    yield start
    for daemon in reversed(started):
        await daemon.close()
