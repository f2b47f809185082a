"""Cluster replicas (issue 15) on a real nats-server with JetStream: two @memory daemons, two data
directories, one events stream. Reports sent to either replica are stored once on both under the same
ids (their stream sequences); a question with ``min_seq`` sees the writer's report; forget converges; a
stopped replica and a new empty one catch up from the stream."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memory_agent.cluster import StreamAcceptor
from memory_agent.daemon import MemoryDaemon
from memory_agent.health import Outage
from memory_agent.types import Filters, NewEvent
from mesh import AsyncAgent
from mesh.access import jetstream
from tests.conftest import NOW

pytestmark = pytest.mark.timeout(180)
CI = os.environ.get("CI") == "true"
N = 12 if CI else 40


def cluster(**extra: Any) -> dict[str, Any]:
    return {"cluster": {"enabled": True, "stream_replicas": 1, **extra.pop("cluster", {})},
            "security": {"admins": ["ops"]}, **extra}


async def send(agent: AsyncAgent, to: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await agent.request(to, json.dumps(payload), content_type="application/json", timeout=30)
    return dict(json.loads(reply.payload))


def rollback(i: int) -> dict[str, Any]:
    return {"event": "rollback", "service": f"svc-{i % 3}", "reason": f"error spike {i}", "trace_id": f"t-{i}",
            "occurred_at": NOW - 3600 + i}


async def rows(daemon: MemoryDaemon) -> list[tuple[int, str]]:
    return [(e.id, e.message_id) for e in await daemon.store.select(None, Filters())]


async def applied(daemon: MemoryDaemon, seq: int) -> None:
    replica = daemon._applier
    assert replica is not None
    assert await replica.wait_applied(seq, 60), f"@{daemon.config.handle} applied {replica.applied_seq}, not {seq}"


async def test_reports_to_either_replica_are_stored_once_on_both(nats_url, make_daemon, mesh_agent,
                                                                 tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await make_daemon(nats_url, data_dir=tmp_path / "a", handle="memory-a", **cluster())
    b = await make_daemon(nats_url, data_dir=tmp_path / "b", handle="memory-b", **cluster())
    deploy = await mesh_agent("deploy")
    replies = [await send(deploy, ("memory-a", "memory-b")[i % 2], rollback(i)) for i in range(N)]
    assert all(r["status"] == "stored" and r["duplicate"] is False for r in replies), replies
    ids = [r["id"] for r in replies]
    assert ids == sorted(ids) and len(set(ids)) == N  # stream sequences: one order for every writer

    # Read your writes on the other replica: the last report went to memory-b; ask memory-a for it.
    asker = await mesh_agent("asker")
    answer = await send(asker, "memory-a", {"query": "How many rollbacks happened today?", "min_seq": ids[-1]})
    assert answer["caught_up"] is True and answer["applied_seq"] >= ids[-1], answer
    assert answer["answer"].startswith(f"{N} ") or f" {N} " in answer["answer"], answer["answer"]
    await applied(b, ids[-1])
    assert await rows(a) == await rows(b)
    assert [i for i, _ in await rows(a)] == ids

    # The same report accepted twice (a redelivery, a retry through another replica) is one event.
    event = NewEvent(message_id="m-dup", session="s", from_handle="deploy", trace_id="t-dup", event="rollback",
                     service="billing", occurred_at=NOW, received_at=NOW, payload={"event": "rollback"},
                     text="rollback billing")
    acceptor = StreamAcceptor(jetstream(deploy), stream="MEMORY_EVENTS",
                              outage=Outage("test", impact="", logger=__import__("logging").getLogger("t")),
                              holds=b.store)
    first, again = await acceptor.accept(event), await acceptor.accept(event)
    assert not first.duplicate and again.duplicate and again.id == first.id
    await applied(a, first.id)
    await applied(b, first.id)
    assert await a.store.find_message("deploy", "m-dup") == await b.store.find_message("deploy", "m-dup") == first.id
    # Another sender may choose the same message id (ids are unique per sender): another event, on both.
    other = await acceptor.accept(replace(event, from_handle="canary", text="rollback billing by canary"))
    assert not other.duplicate and other.id != first.id
    await applied(a, other.id)
    await applied(b, other.id)
    assert await a.store.find_message("canary", "m-dup") == await b.store.find_message("canary", "m-dup") == other.id
    assert await a.store.count(None, Filters()) == await b.store.count(None, Filters()) == N + 2

    # Forget is an entry on the stream: asked of memory-b, applied by both.
    ops = await mesh_agent("ops")
    forgot = await send(ops, "memory-b", {"op": "forget", "trace_id": "t-1"})
    assert forgot == {"status": "forgotten", "count": 1}
    stream_end = b._applier.applied_seq  # type: ignore[union-attr]
    await applied(a, stream_end)
    assert await rows(a) == await rows(b)
    assert await a.store.count(None, Filters(trace_id=("t-1",))) == 0


async def test_a_stopped_replica_and_a_new_empty_one_catch_up(nats_url, make_daemon, mesh_agent,
                                                              tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await make_daemon(nats_url, data_dir=tmp_path / "a", handle="memory-a", **cluster())
    b = await make_daemon(nats_url, data_dir=tmp_path / "b", handle="memory-b", **cluster())
    deploy = await mesh_agent("deploy")
    first = [await send(deploy, "memory-a", rollback(i)) for i in range(N // 2)]
    await applied(b, first[-1]["id"])
    await b.close()  # memory-b is down while reports go on
    later = [await send(deploy, "memory-a", rollback(i)) for i in range(N // 2, N)]
    last = later[-1]["id"]
    b2 = await make_daemon(nats_url, data_dir=tmp_path / "b", handle="memory-b", **cluster())
    c = await make_daemon(nats_url, data_dir=tmp_path / "c", handle="memory-c", **cluster())
    for replica in (b2, c):
        await applied(replica, last)
        assert await rows(replica) == await rows(a)
    assert len(await rows(c)) == N
    # Their embedding backlogs drain like a single node's: FAISS follows SQLite on every replica.
    await asyncio.gather(*(d.wait_embedded(timeout=60) for d in (a, b2, c)))
    stats = await send(deploy, "memory-c", {"op": "stats"})
    assert stats["cluster"]["applied_seq"] >= last and stats["events"] == N
    assert stats["index"]["size"] == N


async def test_single_node_default_is_unchanged(nats_url, make_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    daemon = await make_daemon(nats_url)
    deploy = await mesh_agent("deploy")
    reply = await send(deploy, "memory", rollback(1))
    assert reply["status"] == "stored" and reply["id"] == 1
    answer = await send(deploy, "memory", {"query": "rollbacks today", "min_seq": 1})
    assert "applied_seq" not in answer and "caught_up" not in answer  # no cluster: nothing to wait for
    stats = await send(deploy, "memory", {"op": "stats"})
    assert stats["cluster"] is None and daemon._applier is None
    js = jetstream(deploy)
    with pytest.raises(Exception, match="not found"):
        await js.stream_info("MEMORY_EVENTS")


def test_the_cluster_example_configs_load() -> None:
    from memory_agent.config import load_config

    root = Path(__file__).resolve().parents[2] / "examples" / "cluster"
    handles, ids, dirs = set(), set(), set()
    for i in (1, 2, 3):
        cfg = load_config(root / f"memory-{i}.toml")
        assert cfg.cluster.enabled and cfg.cluster.stream_replicas == 3 and len(cfg.nats_url.split(",")) == 3
        assert not cfg.cluster.replica_key.get_secret_value()  # the key comes from the environment, not a file
        handles.add(cfg.handle)
        ids.add(cfg.cluster.replica_id)
        dirs.add(cfg.data_dir)
        assert f"server_name: n{i}" in (root / f"nats-{i}.conf").read_text()
    assert handles == {"memory"} and len(ids) == len(dirs) == 3  # one handle, shared by three distinct replicas


async def test_a_store_ahead_of_the_stream_refuses_to_start(nats_url, make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from memory_agent.config import Config
    from memory_agent.errors import ConfigError
    from memory_agent.store.events import EventStore

    data = tmp_path / "ahead"
    async with await EventStore.open(Config(data_dir=data).db_path) as store:
        event = NewEvent(message_id="m-old", session="s", from_handle="deploy", trace_id="t", event="rollback",
                         service=None, occurred_at=NOW, received_at=NOW, payload={}, text="rollback")
        await store.insert([event], ids=[5])
    with pytest.raises(ConfigError, match="recreated or purged"):
        await make_daemon(nats_url, data_dir=data, handle="memory-a", **cluster())


async def test_the_events_and_vectors_streams_are_created_once_and_a_foreign_stream_of_that_name_is_refused(
        nats_url: str) -> None:
    import nats
    from nats.js.api import StreamConfig

    from memory_agent.cluster.stream import StreamLimits, ensure_stream, stream_subject
    from memory_agent.cluster.vectors import ensure_vector_stream, vector_subject
    from memory_agent.errors import ConfigError

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        assert await ensure_stream(js, "EV_ONCE", StreamLimits()) == 0
        await js.publish(stream_subject("EV_ONCE"), b"x")
        assert await ensure_stream(js, "EV_ONCE", StreamLimits()) == 1  # used as it is, not re-created
        await ensure_vector_stream(js, "VEC_ONCE", events_stream="EV_ONCE", replicas=1)
        assert (await js.stream_info("VEC_ONCE")).config.subjects == [vector_subject("EV_ONCE", ">")]
        await js.add_stream(StreamConfig(name="FOREIGN", subjects=["someone.else"]))
        with pytest.raises(ConfigError) as events:
            await ensure_stream(js, "FOREIGN", StreamLimits())
        assert events.value.key == "cluster.stream" and "does not take" in str(events.value)
        with pytest.raises(ConfigError) as vectors:
            await ensure_vector_stream(js, "FOREIGN", events_stream="EV_ONCE", replicas=1)
        assert vectors.value.key == "cluster.vector_stream" and "(cluster.vector_stream)" in str(vectors.value)
    finally:
        await nc.close()
