"""Fixtures for the security tests: nats-servers configured by the test (auth, TLS, permissions); daemons
on them come from the root ``make_daemon``. Every server is stopped at teardown; one that died fails the test."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesh.server import NatsServer

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
