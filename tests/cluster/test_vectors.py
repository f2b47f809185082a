"""Embed once (issue 15, item 2) on a real nats-server: the replica that accepted a report embeds it and
publishes the vector on the vectors stream; the other replicas take it instead of embedding (their
embedders encode nothing for those events); a replica whose accepting peer is gone embeds itself after
the wait; a vector of another model is ignored; a new, empty replica catches up without encoding."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.cluster import StreamAcceptor
from memory_agent.daemon import MemoryDaemon
from memory_agent.health import Outage
from memory_agent.types import Filters, NewEvent
from mesh import AsyncAgent
from mesh.access import jetstream
from tests.cluster.test_replicas import CI, applied, cluster, rollback, send
from tests.conftest import NOW, CountingEmbedder

pytestmark = pytest.mark.timeout(180)
N = 12 if CI else 40


def encoded(daemon: MemoryDaemon) -> int:
    embedder = daemon._embedder_override
    assert isinstance(embedder, CountingEmbedder)
    return embedder.encoded


async def vectors_on_stream(agent: AsyncAgent) -> int:
    return int((await jetstream(agent).stream_info("MEMORY_VECTORS")).state.messages)


async def all_vectors(daemon: MemoryDaemon) -> tuple[list[int], np.ndarray]:
    ids = sorted(e.id for e in await daemon.store.select(None, Filters()))
    found, vectors = await daemon.store.vectors(ids)
    assert found.tolist() == ids, f"@{daemon.config.handle}: events without a vector"
    return ids, vectors


async def test_each_event_is_embedded_once_and_a_new_replica_catches_up_without_encoding(
        nats_url, make_daemon, mesh_agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A wait far longer than embedding takes here: a replica that embedded an event accepted elsewhere
    # (rather than take its vector) shows in the counts.
    conf = cluster(cluster={"vector_wait": 60})
    a = await make_daemon(nats_url, data_dir=tmp_path / "a", handle="memory-a", **conf)
    b = await make_daemon(nats_url, data_dir=tmp_path / "b", handle="memory-b", **conf)
    deploy = await mesh_agent("deploy")
    replies = [await send(deploy, ("memory-a", "memory-b")[i % 2], rollback(i)) for i in range(N)]
    last = max(r["id"] for r in replies)
    for replica in (a, b):
        await applied(replica, last)
    await asyncio.gather(a.wait_embedded(timeout=60), b.wait_embedded(timeout=60))
    # Each replica encoded the reports it accepted, and took the other's from the stream.
    assert (encoded(a), encoded(b)) == (N // 2, N - N // 2)
    assert await vectors_on_stream(deploy) == N
    ids_a, vectors_a = await all_vectors(a)
    ids_b, vectors_b = await all_vectors(b)
    assert ids_a == ids_b and np.array_equal(vectors_a, vectors_b)
    stats = await send(deploy, "memory-b", {"op": "stats"})
    assert stats["index"]["size"] == N and stats["embedding"]["taken"] == N // 2
    assert stats["cluster"]["vectors"]["published"] == N - N // 2
    assert stats["cluster"]["vectors"]["buffered"] == 0  # every vector taken; its own ones never buffered

    # A new, empty replica catches up from the events stream plus the vectors stream: nothing to encode.
    c = await make_daemon(nats_url, data_dir=tmp_path / "c", handle="memory-c", **conf)
    await applied(c, last)
    await c.wait_embedded(timeout=60)
    assert encoded(c) == 0
    ids_c, vectors_c = await all_vectors(c)
    assert ids_c == ids_a and np.array_equal(vectors_c, vectors_a)
    stats = await send(deploy, "memory-c", {"op": "stats"})
    assert stats["index"]["size"] == N and stats["embedding"]["taken"] == N
    # Its answers use the dense side like the others'.
    answer = await send(deploy, "memory-c", {"query": "error spike 3", "limit": 3})
    assert answer["events"] and answer["events"][0]["trace_id"] == "t-3", answer


async def accept_elsewhere(agent: AsyncAgent, store: Any, n: int) -> int:
    """Put ``n`` reports on the events stream as a replica would that then died before embedding them."""
    acceptor = StreamAcceptor(jetstream(agent), stream="MEMORY_EVENTS", holds=store,
                              outage=Outage("test", impact="", logger=logging.getLogger("test")))
    last = 0
    for i in range(n):
        event = NewEvent(message_id=f"gone-{i}", session="s", from_handle="deploy", trace_id=f"t-gone-{i}",
                         event="rollback", service="billing", occurred_at=NOW - i, received_at=NOW,
                         payload={"event": "rollback"}, text=f"rollback billing after deploy {i}")
        last = (await acceptor.accept(event)).id
    return last


async def test_a_replica_whose_accepting_peer_is_gone_embeds_itself_after_the_wait(
        nats_url, make_daemon, mesh_agent, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wait = 1.0
    b = await make_daemon(nats_url, data_dir=tmp_path / "b", handle="memory-b", **cluster(cluster={"vector_wait": wait}))
    deploy = await mesh_agent("deploy")
    started = time.monotonic()
    last = await accept_elsewhere(deploy, b.store, N)
    await applied(b, last)
    await b.wait_embedded(timeout=60)
    assert time.monotonic() - started >= wait  # held for the vector first
    assert encoded(b) == N
    ids, _ = await all_vectors(b)
    assert len(ids) == N
    # ... and it published what it embedded, for the others.
    for _ in range(100):
        if await vectors_on_stream(deploy) == N:
            break
        await asyncio.sleep(0.05)
    assert await vectors_on_stream(deploy) == N


class OtherModel(CountingEmbedder):
    """Same dimension, another model: its vectors must not mix with hashing-64's."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "other-64"


async def test_vectors_of_another_model_are_ignored(nats_url, make_daemon, mesh_agent,
                                                    tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = await make_daemon(nats_url, data_dir=tmp_path / "a", handle="memory-a", **cluster(cluster={"vector_wait": 60}))
    c = await make_daemon(nats_url, data_dir=tmp_path / "c", handle="memory-c", embedder=OtherModel(),
                          **cluster(cluster={"vector_wait": 0.5}))
    deploy = await mesh_agent("deploy")
    replies = [await send(deploy, "memory-a", rollback(i)) for i in range(N)]
    await applied(c, replies[-1]["id"])
    await asyncio.gather(a.wait_embedded(timeout=60), c.wait_embedded(timeout=60))
    assert encoded(a) == N and encoded(c) == N  # c embedded every event itself
    found, _ = await c.store.vectors([r["id"] for r in replies])
    assert len(found) == N
    assert {m.model for m in await c.store.vector_models()} == {"other-64"}
    stats = await send(deploy, "memory-c", {"op": "stats"})
    assert stats["embedding"]["taken"] == 0 and stats["cluster"]["vectors"]["ignored"] >= N
