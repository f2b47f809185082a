"""Fixtures for the security tests: nats-servers configured by the test (auth, TLS, permissions) and real
daemons on them. Every server and daemon is stopped at teardown; a server that died fails the test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from memory_agent.config import Config
from memory_agent.daemon import MemoryDaemon
from memory_agent.embedding.hashing import HashingEmbedder
from mesh.server import NatsServer

# Saturday 2026-11-21 10:00 UTC: "now" for every daemon here.
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()

ServerFactory = Callable[..., NatsServer]


@pytest.fixture
def nats_with(tmp_path: Path) -> Iterator[ServerFactory]:
    """``nats_with("authorization { token: ... }")``: a started nats-server whose config is that text
    (plus ``max_payload``); its store and config live under ``tmp_path``."""
    servers: list[NatsServer] = []

    def start(config: str, *, name: str = "nats") -> NatsServer:
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "server.conf"
        path.write_text("max_payload: 2097152\n" + config)
        server = NatsServer(store_dir=directory / "store", config_file=path)
        servers.append(server)
        server.start()
        return server

    yield start
    died = [s for s in servers if s.pid is not None and not s.running]
    for server in servers:
        if server in died:
            sys.stderr.write(f"nats-server died during the test; log tail:\n{server.log_tail()}\n")
        server.stop()
    if died:
        pytest.fail(f"nats-server died during the test:\n{died[0].log_tail()}")


DaemonFactory = Callable[..., Any]


@pytest.fixture
async def daemon_on(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """``await daemon_on(url, **config)``: a started MemoryDaemon (small real embedder, fixed clock) on
    ``tmp_path/data``; closed after the test. Request the server's fixture before this one, so that
    the server outlives the daemon at teardown."""
    started: list[MemoryDaemon] = []

    async def start(nats_url: str, *, clock: Callable[[], float] = lambda: NOW, **overrides: Any) -> MemoryDaemon:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "nats_url": nats_url, "index_save_interval": 0.5}
        values.update(overrides)
        daemon = MemoryDaemon(Config(**values), embedder=HashingEmbedder(dim=64, name="hashing-64"), clock=clock)
        started.append(daemon)
        await daemon.start()
        return daemon

    yield start
    for daemon in started:
        await daemon.close()
