"""Growing into a cluster (issue 15, item 6): a single node's store is published to the events stream
once, and a replica started empty catches up with its whole history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from memory_agent.cluster.migrate import publish_store
from memory_agent.config import Config
from memory_agent.types import Filters
from tests.cluster.test_replicas import applied, cluster, rollback, send
from tests.conftest import CountingEmbedder

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


async def test_a_single_node_store_published_once_is_caught_up_by_a_new_replica(
        nats_url, make_daemon, mesh_agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    single = await make_daemon(nats_url, data_dir=tmp_path / "single")
    deploy = await mesh_agent("deploy")
    for i in range(5):
        assert (await send(deploy, "memory", rollback(i)))["status"] == "stored"
    history = sorted((e.message_id, e.trace_id, e.occurred_at, e.received_at)
                     for e in await single.store.select(None, Filters()))
    await single.wait_embedded(timeout=30)
    await single.close()

    cfg = Config(data_dir=tmp_path / "single", nats_url=nats_url, cluster={"enabled": True})
    done = await publish_store(cfg, batch=2)
    assert (done.events, done.published, done.duplicates, done.vectors) == (5, 5, 0, 5)
    again = await publish_store(cfg)  # within the duplicate window: nothing new
    assert (again.published, again.duplicates) == (0, 5)

    replica = await make_daemon(nats_url, data_dir=tmp_path / "replica", handle="memory-a", **cluster())
    await applied(replica, done.last_seq)
    got = sorted((e.message_id, e.trace_id, e.occurred_at, e.received_at)
                 for e in await replica.store.select(None, Filters()))
    assert got == history
    # The single node's vectors came along: the replica embeds nothing.
    await replica.wait_embedded(timeout=30)
    embedder = replica._embedder_override
    assert isinstance(embedder, CountingEmbedder) and embedder.encoded == 0
    found, _ = await replica.store.vectors(list(range(1, done.last_seq + 1)))
    assert len(found) == 5


def test_publish_store_without_nats_says_what_to_set(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "memory_agent", "publish-store", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**__import__("os").environ, "MEMORY_AGENT_NATS_URL": ""})
    assert done.returncode == 1 and "nats_url" in done.stderr, done.stderr
