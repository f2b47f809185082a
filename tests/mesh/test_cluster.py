"""The mesh on a 3-node NATS cluster (issue 15, item 0): with ``replicas=3`` every stream and bucket has a copy
on each node, so losing the node that leads the inbox stream loses nothing and stops nobody: a new agent
still starts, and messages flow, also the ones sent before the loss."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from mesh import AsyncAgent, Message
from mesh.constants import PRIORITY_STREAM, REGISTRY_BUCKET, SESSIONS_BUCKET, STREAM_NAME
from mesh.server import NatsServer, cluster_specs
from tests.mesh.helpers import inbox, next_msg

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three nats-servers with JetStream, routed to each other on loopback."""
    servers = [NatsServer(store_dir=tmp_path / spec.name, cluster=spec) for spec in cluster_specs(3)]
    try:
        for server in servers:
            server.start(timeout=20)
        yield servers
    finally:
        for server in servers:
            server.stop()


async def stream_leader(url: str, stream: str) -> str:
    nc = await nats.connect(url)
    try:
        for _ in range(100):
            info = await nc.jetstream().stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                return info.cluster.leader
            await asyncio.sleep(0.1)
        raise AssertionError(f"stream {stream} has no leader")
    finally:
        await nc.close()


async def test_losing_the_inbox_leader_loses_nothing_and_stops_nobody(cluster: list[NatsServer]) -> None:
    urls = [server.url for server in cluster]
    memory = AsyncAgent("memory", servers=urls, replicas=3, heartbeat_interval=0.5)
    deploy = AsyncAgent("deploy", servers=urls, replicas=3, heartbeat_interval=0.5)

    @memory.on_message
    async def answer(msg: Message) -> None:
        await memory.resolve(msg.session, f"noted: {msg.payload}")

    async with memory, deploy:
        await memory.register()
        await deploy.register()
        assert (await deploy.request("memory", "before", timeout=30)).payload == "noted: before"
        nc = await nats.connect(urls[0])
        for name in (STREAM_NAME, PRIORITY_STREAM, f"KV_{REGISTRY_BUCKET}", f"KV_{SESSIONS_BUCKET}"):
            assert (await nc.jetstream().stream_info(name)).config.num_replicas == 3, name
        await nc.close()
        await memory.close()  # offline: what is sent now waits in the replicated inbox
        waiting = await deploy.open_session("memory", "sent while memory was away")

        leader = await stream_leader(urls[0], STREAM_NAME)
        victim = next(s for s in cluster if s.cluster is not None and s.cluster.name == leader)
        victim.kill()
        alive = [s.url for s in cluster if s is not victim]

        # A new agent starts on the surviving nodes and gets what waited, and new messages flow.
        heir = AsyncAgent("memory", servers=alive, replicas=3, heartbeat_interval=0.5)
        heir_in = inbox(heir)
        async with heir:
            await heir.register()
            got = await next_msg(heir_in, timeout=60)
            assert (got.message_id, got.payload) == (waiting.message_id, "sent while memory was away")
            await heir.resolve(got.session, "late but there")

            @heir.on_message
            async def answer_again(msg: Message) -> None:
                await heir.resolve(msg.session, f"noted: {msg.payload}")

            for i in range(5):
                reply = await deploy.request("memory", f"after {i}", timeout=60)
                assert reply.payload == f"noted: after {i}"
