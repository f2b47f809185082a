"""Fixtures for the daemon tests: the root daemon factory bound to this test's nats-server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from memory_agent.daemon import MemoryDaemon
from tests.conftest import DaemonFactory


@pytest.fixture
def start_daemon(nats_url: str, make_daemon: DaemonFactory) -> Callable[..., Awaitable[MemoryDaemon]]:
    """``await start_daemon(embedder=..., **config)``: :func:`tests.conftest.make_daemon` on the test's server."""

    def start(embedder: Any = None, **overrides: Any) -> Awaitable[MemoryDaemon]:
        return make_daemon(nats_url, embedder=embedder, **overrides)

    return start
