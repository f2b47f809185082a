"""Benchmark: @memory replicas on the events stream (issue 15) beside the single-node default, same run.

    python bench/cluster.py                      # R1 on one server, R3 on a 3-node loopback cluster
    python bench/cluster.py --reports 500 --events 50000

Starts its own nats-servers (temp stores) and in-process daemons with the small hashing embedder (the
model is not what is measured here; embedding runs behind acknowledgement in every mode). Prints:

1. **Acknowledgement**: ``--reports`` reports sent one at a time through the mesh (``request`` to the
   replica, reply ``stored``), p50/p99/max milliseconds, for (a) one @memory, acknowledged once committed
   in SQLite (the default), (b) a replica on an R1 events stream, (c) a replica on an R3 stream of a
   3-node cluster. The mesh's own round trip is in every figure (``bench/mesh_roundtrip.py``); the
   difference between (a) and (b)/(c) is what the stream adds. The stream's own publish acknowledgement
   (``js.publish`` alone, no mesh) is measured beside it.
2. **Apply / catch-up**: ``--events`` reports are published to the stream first, then a new empty
   replica starts and applies them all: events/s from its start to ``applied_seq`` = the stream's end,
   and the daemon process's CPU seconds per 1,000 events meanwhile (SQLite + FTS5 commits; the hashing
   embedder's backlog runs too, at its much lower cost than MiniLM).
3. **Embed once**: ``--events`` reports on a fresh events stream; a new replica catches up and *embeds*
   them (none has a vector yet; it publishes the vectors), then another new replica catches up from the
   events stream *plus the vectors stream* and embeds nothing: events/s until both applied and embedded
   (FAISS holds them all) and CPU seconds per 1,000 events, for the 384-dim hashing embedder (the
   pipeline's own cost: vectors of MiniLM's size) and, with ``--model-events`` (default 1,000; 0 skips
   it), for the real MiniLM model (``HF_HUB_OFFLINE=1``), where embedding dominates.

The load average (``uptime``) is printed with the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
import numpy as np

from memory_agent.cluster.codec import encode_report
from memory_agent.cluster.stream import stream_subject
from memory_agent.config import Config, EmbeddingConfig
from memory_agent.daemon import MemoryDaemon
from memory_agent.embedding.base import load_embedder
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.protocols import Embedder
from memory_agent.types import NewEvent
from mesh import AsyncAgent, NatsServer
from mesh.server import cluster_specs, wait_for_jetstream

NOW = time.time()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


@contextmanager
def servers(root: Path, count: int) -> Iterator[list[NatsServer]]:
    """One nats-server, or ``count`` routed into a loopback cluster."""
    specs = cluster_specs(count, name="bench") if count > 1 else [None]
    started: list[NatsServer] = []
    try:
        for i, spec in enumerate(specs):
            started.append(NatsServer(store_dir=root / f"n{i + 1}", cluster=spec).start(timeout=30))
        yield started
    finally:
        for server in started:
            server.stop()


def report(i: int) -> dict[str, Any]:
    return {"event": "rollback", "service": f"svc-{i % 7}", "reason": f"error spike after deploy {i}",
            "trace_id": f"t-{i}", "occurred_at": NOW - 3600 + i % 3600}


def config(root: Path, name: str, urls: list[str], replicas: int | None, stream: str = "MEMORY_EVENTS",
           **cluster: Any) -> Config:
    values: dict[str, Any] = {"data_dir": root / name, "nats_url": ",".join(urls), "handle": name,
                              "shared": {"enabled": False}, "http": {"listen": ""}, "log_level": "WARNING"}
    if replicas is not None:
        values["cluster"] = {"enabled": True, "stream_replicas": replicas, "stream": stream, "apply_batch": 512,
                             "vector_stream": f"{stream}_VECTORS", **cluster}
    return Config(**values)


async def acknowledgement(root: Path, urls: list[str], replicas: int | None, n: int, label: str) -> None:
    slug = f"r{replicas}" if replicas else "single"
    daemon = MemoryDaemon(config(root, f"memory-{slug}", urls, replicas), embedder=HashingEmbedder(dim=64))
    await daemon.start()
    agent = AsyncAgent(f"bench-{slug}", servers=urls)
    await agent.start()
    await agent.register()
    try:
        for i in range(20):  # warm-up: lookups cached, consumers hot
            await agent.request(daemon.config.handle, json.dumps(report(-i - 1)), content_type="application/json")
        times = []
        for i in range(n):
            t = time.perf_counter()
            reply = await agent.request(daemon.config.handle, json.dumps(report(i)), content_type="application/json",
                                        timeout=30)
            times.append(time.perf_counter() - t)
            assert json.loads(reply.payload)["status"] == "stored", reply.payload
        ms = [t * 1000 for t in times]
        print(f"  {label:<28} reports acknowledged through the mesh: p50 {pct(ms, .5):6.2f} ms  p99 "
              f"{pct(ms, .99):6.2f} ms  max {max(ms):6.2f} ms   ({n}; {load()})", flush=True)
        if replicas is not None:
            await publish_ack(urls[0], daemon.config.cluster.stream, n, label)
    finally:
        await agent.close()
        await daemon.close()


async def publish_ack(url: str, stream: str, n: int, label: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    times = []
    for i in range(n):
        body, headers = encode_report(event(f"ack-{stream}-{i}-{time.time()}", i))
        t = time.perf_counter()
        await js.publish(stream_subject(stream), body, stream=stream, headers=headers)
        times.append(time.perf_counter() - t)
    await nc.close()
    ms = [t * 1000 for t in times]
    print(f"  {label:<28} the stream's publish ack alone:         p50 {pct(ms, .5):6.2f} ms  p99 "
          f"{pct(ms, .99):6.2f} ms  max {max(ms):6.2f} ms   ({n}; {load()})", flush=True)


def event(message_id: str, i: int) -> NewEvent:
    payload = report(i)
    return NewEvent(message_id=message_id, session=f"s-{i}", from_handle="bench", trace_id=payload["trace_id"],
                    event="rollback", service=payload["service"], occurred_at=payload["occurred_at"],
                    received_at=NOW, payload=payload, text=f"rollback {payload['service']} {payload['reason']}")


async def publish_events(root: Path, urls: list[str], replicas: int, events: int, label: str) -> tuple[str, float]:
    """A fresh events stream named after ``label`` holding ``events`` reports; returns its name and the
    seconds publishing took."""
    stream = f"CATCHUP_{label.upper().replace('-', '_')}"
    nc = await nats.connect(urls[0])
    js = nc.jetstream()
    writer = MemoryDaemon(config(root, f"writer-{label}", urls, replicas, stream), embedder=HashingEmbedder(dim=64))
    await writer.start()  # creates the streams
    await writer.close()
    started = time.perf_counter()
    for first in range(0, events, 1000):
        bodies = [encode_report(event(f"c-{label}-{i}", i)) for i in range(first, min(first + 1000, events))]
        acks = [js.publish(stream_subject(stream), body, stream=stream, headers=headers, timeout=30)
                for body, headers in bodies]
        await asyncio.gather(*acks)
    published = time.perf_counter() - started
    await nc.close()
    return stream, published


async def catch_up(root: Path, urls: list[str], replicas: int, events: int, label: str) -> None:
    stream, published = await publish_events(root, urls, replicas, events, label)
    replica = MemoryDaemon(config(root, f"fresh-{label}", urls, replicas, stream), embedder=HashingEmbedder(dim=64))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await replica.start()
    applier = replica._applier
    assert applier is not None
    last = applier.applied_seq + applier.lag
    while applier.applied_seq < last:
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"  {label:<28} {events} events published in {published:.1f} s ({events / published:,.0f}/s); a new "
          f"replica applied them in {seconds:.1f} s: {events / seconds:,.0f} events/s, {cpu / events * 1000:.2f} CPU s "
          f"per 1,000 (start included; {load()})", flush=True)
    await replica.close()


class CountingEmbedder:
    """Counts the texts the wrapped embedder encodes (to show a replica that takes vectors encodes none)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        return self.inner.encode(texts)


async def replica_until_embedded(cfg: Config, embedder: CountingEmbedder, events: int) -> tuple[float, float, float]:
    """Start a new replica on ``cfg``; seconds until it applied ``events``, seconds and CPU seconds until it
    also embedded them (start included)."""
    replica = MemoryDaemon(cfg, embedder=embedder)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await replica.start()
    try:
        applier = replica._applier
        assert applier is not None
        while applier.applied_seq < events:
            await asyncio.sleep(0.01)
        applied = time.perf_counter() - t0
        await replica.wait_embedded(timeout=3600)
        seconds = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stats = await replica.stats()
        assert stats["index"]["size"] == events, stats["index"]
    finally:
        await replica.close()
    return applied, seconds, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


async def embed_once(root: Path, urls: list[str], replicas: int, events: int, label: str,
                     make: Callable[[], Embedder]) -> None:
    """A replica that embeds beside one that takes the vectors, on the same events (see the docstring)."""
    stream, _ = await publish_events(root, urls, replicas, events, label)
    embedding = CountingEmbedder(make())
    applied, seconds, cpu = await replica_until_embedded(
        config(root, f"embeds-{label}", urls, replicas, stream, vector_wait=0.0), embedding, events)
    model = embedding.name.rsplit("/", 1)[-1]
    print(f"  {label:<28} new replica, embeds ({model}): {events} events applied in {applied:.1f} s, embedded in "
          f"{seconds:.1f} s: "
          f"{events / seconds:,.0f} events/s, {cpu / events * 1000:.2f} CPU s per 1,000, {embedding.encoded} "
          f"encoded ({load()})", flush=True)
    nc = await nats.connect(urls[0])
    for _ in range(600):  # the vectors are published in the background: all on the stream first
        if (await nc.jetstream().stream_info(f"{stream}_VECTORS")).state.messages >= events:
            break
        await asyncio.sleep(0.1)
    await nc.close()
    taking = CountingEmbedder(embedding.inner)
    applied, seconds, cpu = await replica_until_embedded(
        config(root, f"takes-{label}", urls, replicas, stream), taking, events)
    print(f"  {label:<28} new replica, takes vectors: {events} events applied in {applied:.1f} s, embedded in "
          f"{seconds:.1f} s: "
          f"{events / seconds:,.0f} events/s, {cpu / events * 1000:.2f} CPU s per 1,000, {taking.encoded} "
          f"encoded ({load()})", flush=True)


def minilm() -> Embedder:
    return load_embedder(EmbeddingConfig(), data_dir=Path(tempfile.gettempdir()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=300, help="reports per acknowledgement series (default 300)")
    parser.add_argument("--events", type=int, default=20_000, help="events a new replica catches up on (default 20000)")
    parser.add_argument("--model-events", type=int, default=1_000,
                        help="events of the embed-once series with the real MiniLM model (default 1000; 0 skips it)")
    parser.add_argument("--only-embed-once", action="store_true", help="only the embed-once series (R1)")
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-node cluster (R3)")
    args = parser.parse_args()
    print(f"bench/cluster.py: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        with servers(root / "single", 1) as one:
            urls = [one[0].url]
            print("one nats-server:")
            await embed_once(root, urls, 1, args.events, "hashing-384", lambda: HashingEmbedder(dim=384))
            if args.model_events:
                await embed_once(root, urls, 1, args.model_events, "minilm", minilm)
            if args.only_embed_once:
                return
            await acknowledgement(root, urls, None, args.reports, "single-node (commit)")
            await acknowledgement(root, urls, 1, args.reports, "replica, stream R1")
            await catch_up(root, urls, 1, args.events, "r1")
        if not args.no_cluster:
            with servers(root / "three", 3) as three:
                urls = [s.url for s in three]
                await wait_for_jetstream(urls[0])
                print("3-node loopback cluster:")
                await acknowledgement(root, urls, 3, args.reports, "replica, stream R3")
                await catch_up(root, urls, 3, args.events, "r3")


if __name__ == "__main__":
    asyncio.run(main())
