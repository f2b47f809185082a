"""Fixtures for the daemon: a real MemoryDaemon on a real nats-server, with a fixed clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.config import Config
from memory_agent.daemon import MemoryDaemon
from memory_agent.embedding.hashing import HashingEmbedder
from mesh import AsyncAgent

# Saturday 2026-11-21 10:00 UTC: "now" in every daemon test.
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()


class CountingEmbedder(HashingEmbedder):
    """The small deterministic embedder, counting the texts it encodes (to prove nothing is re-embedded)."""

    def __init__(self) -> None:
        super().__init__(dim=64, name="hashing-64")
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        return super().encode(texts)


DaemonFactory = Callable[..., Any]


@pytest.fixture
async def start_daemon(tmp_path: Path, nats_url: str) -> AsyncIterator[DaemonFactory]:
    """``await start_daemon(embedder=..., **config)`` starts a daemon on ``tmp_path/data``; all are closed after."""
    started: list[MemoryDaemon] = []

    async def start(embedder: HashingEmbedder | None = None, **overrides: Any) -> MemoryDaemon:
        values: dict[str, Any] = {"data_dir": tmp_path / "data", "nats_url": nats_url, "index_save_interval": 0.5}
        values.update(overrides)
        daemon = MemoryDaemon(Config(**values), embedder=embedder or CountingEmbedder(), clock=lambda: NOW)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        await daemon.close()


@pytest.fixture
async def agent_factory(nats_url: str) -> AsyncIterator[Callable[[str], Any]]:
    """``await agent_factory("deploy")``: a registered agent, closed after the test."""
    agents: list[AsyncAgent] = []

    async def make(handle: str | None = None) -> AsyncAgent:
        agent = AsyncAgent(handle or f"tester-{uuid.uuid4().hex[:6]}", servers=nats_url)
        await agent.start()
        await agent.register()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.close()
