"""Replicas on a 3-node NATS cluster (three nats-server processes routed on loopback, the events stream
R3): SIGKILL the server leading the events stream while reports flow and while one replica is down: no
acknowledged report is lost, the stopped replica catches up, both hold the same ids.

The mesh's own streams and buckets are created R3 too (the daemon gives the mesh the events stream's
replica count, issue 14's ``replicas``): the test checks that every stream is R3 before it kills a node,
so losing one tests the cluster and not an R1 inbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from memory_agent.types import Filters
from mesh import AsyncAgent
from mesh.errors import MeshError
from mesh.server import NatsServer, cluster_specs, wait_for_jetstream
from tests.cluster.test_replicas import applied, rollback, rows

pytestmark = pytest.mark.timeout(240)
CI = os.environ.get("CI") == "true"
N = 10 if CI else 30


@pytest.fixture
def three_servers(tmp_path: Path) -> Iterator[list[NatsServer]]:
    servers = [NatsServer(store_dir=tmp_path / spec.name, cluster=spec) for spec in cluster_specs(3, name="memory-test")]
    try:
        for server in servers:
            server.start(timeout=30)
        yield servers
    finally:
        for server in servers:
            server.stop()


async def all_streams_r3(url: str) -> None:
    """Every stream on the cluster is R3 as created (the events stream and the mesh's inbox, registry,
    sessions and rooms), then wait until each has a leader and two current followers."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        single = [i.config.name for i in await js.streams_info() if (i.config.num_replicas or 1) < 3]
        assert not single, f"streams created with fewer than 3 replicas: {single}"
        for _ in range(300):
            infos = await js.streams_info()
            if all(i.cluster and i.cluster.leader and len(i.cluster.replicas or []) == 2
                   and all(r.current for r in i.cluster.replicas or []) for i in infos):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("streams did not reach R3")
    finally:
        await nc.close()


async def leaders_elected(url: str, gone: str) -> None:
    """Wait until every stream has a leader other than ``gone`` (the mesh's publish does not retry a
    publish that met an election; issue 14's SDK retries it under the same message id)."""
    nc = await nats.connect(url)
    try:
        for _ in range(300):
            with contextlib.suppress(nats.errors.Error):
                infos = await nc.jetstream().streams_info()
                if infos and all(i.cluster and i.cluster.leader and i.cluster.leader != gone for i in infos):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError("no new leaders")
    finally:
        await nc.close()


async def leader_of(url: str, stream: str) -> str:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


def _no_responders(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, nats.errors.NoRespondersError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def send(agent: AsyncAgent, to: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A request; sent again only when its publish met no responder at all (so it was not stored): the
    client's reconnect to a surviving server is still propagating interest."""
    for _ in range(60):
        try:
            reply = await agent.request(to, json.dumps(payload), content_type="application/json", timeout=90)
            return dict(json.loads(reply.payload))
        except MeshError as exc:
            if not _no_responders(exc):
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("no responders for 30 s")


async def test_killing_the_stream_leader_loses_no_acknowledged_report(three_servers, make_daemon,
                                                                       tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    urls = ",".join(s.url for s in three_servers)
    conf = {"cluster": {"enabled": True, "stream_replicas": 3}, "shared": {"enabled": False}}
    await wait_for_jetstream(three_servers[0].url)
    a = await make_daemon(urls, data_dir=tmp_path / "a", handle="memory-a", **conf)
    deploy = AsyncAgent("deploy", servers=[s.url for s in three_servers], replicas=3)
    await deploy.start()
    await deploy.register()
    try:
        await scenario(three_servers, urls, conf, a, deploy, make_daemon, tmp_path)
    finally:
        await deploy.close()


async def scenario(three_servers: list[NatsServer], urls: str, conf: dict[str, Any], a: Any, deploy: AsyncAgent,
                   make_daemon: Any, tmp_path: Path) -> None:
    b = await make_daemon(urls, data_dir=tmp_path / "b", handle="memory-b", **conf)
    await all_streams_r3(three_servers[0].url)
    nc = await nats.connect(three_servers[0].url)
    assert (await nc.jetstream().stream_info("MEMORY_EVENTS")).config.num_replicas == 3
    await nc.close()

    acked = [await send(deploy, ("memory-a", "memory-b")[i % 2], rollback(i)) for i in range(N // 2)]
    await b.close()  # a replica down, too
    leader = await leader_of(three_servers[0].url, "MEMORY_EVENTS")
    victim = next(s for i, s in enumerate(three_servers) if f"n{i + 1}" == leader)
    victim.kill()  # SIGKILL
    await leaders_elected(next(s.url for s in three_servers if s is not victim), leader)
    acked += [await send(deploy, "memory-a", rollback(i)) for i in range(N // 2, N)]
    assert all(r["status"] == "stored" for r in acked), acked
    ids = [r["id"] for r in acked]
    assert len(set(ids)) == N

    b2 = await make_daemon(urls, data_dir=tmp_path / "b", handle="memory-b", **conf)
    for replica in (a, b2):
        await applied(replica, max(ids))
    assert await rows(a) == await rows(b2)
    assert sorted(i for i, _ in await rows(a)) == sorted(ids)
    assert await a.store.count(None, Filters(event=("rollback",))) == N


async def test_start_up_waits_for_a_cluster_that_has_lost_its_majority(three_servers) -> None:  # type: ignore[no-untyped-def]
    """A replica starting while two of three servers are down (no JetStream leader can be elected) keeps
    trying instead of failing, and opens the stream once they are back; with too little patience it gives
    up with a ConfigError that names the likely cause."""
    from nats.js.api import StreamConfig

    from memory_agent.cluster.stream import create_or_open
    from memory_agent.errors import ConfigError

    first, *others = three_servers
    await wait_for_jetstream(first.url)
    for server in others:
        server.stop()
    config = StreamConfig(name="LEADERLESS", subjects=["memory.events.LEADERLESS"], num_replicas=3)
    nc = await nats.connect(first.url)
    js = nc.jetstream()
    try:
        with pytest.raises(ConfigError, match="majority of the NATS servers") as refused:
            await create_or_open(js, config, what="events stream", key="cluster.stream", patience=2.0)
        assert refused.value.key == "cluster.stream"

        # The same replica started again (the refused creation may still be proposed on the old leader)
        opening = asyncio.create_task(create_or_open(js, config, what="events stream", key="cluster.stream"))
        await asyncio.sleep(3.0)
        assert not opening.done(), "gave up (or got an answer) while the cluster had no majority"
        for server in others:
            await asyncio.to_thread(server.start, 30)
        info = await asyncio.wait_for(opening, 90)
        assert info.state.last_seq == 0 and info.config.num_replicas == 3
        assert (await js.stream_info("LEADERLESS")).config.num_replicas == 3
    finally:
        await nc.close()
