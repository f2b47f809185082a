"""Benchmark: mesh request -> resolve round trip beside raw nats-py request/reply, same run, same server.

    python bench/mesh_roundtrip.py                        # starts its own nats-server (temp store)
    python bench/mesh_roundtrip.py --nats-url nats://127.0.0.1:4222 --sessions 10000

Measures (a) sequential round trips (p50/p99 latency) and (b) ``--concurrency`` sessions in flight
at once (sessions/s and p50/p99 latency under load). The mesh side is a full durable session:
registry lookup (cached), session record create, JetStream publish, durable push delivery,
handler, compare-and-set resolve, JetStream publish, delivery, ack. The raw side is a core NATS
request to a subscriber that responds (no persistence). Requester and responder share one
process and one event loop in both cases.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg

from mesh import AsyncAgent, Message, NatsServer

Call = Callable[[int], Awaitable[None]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(call: Call, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t)
    return out


async def concurrent(call: Call, total: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start), latencies


async def run(url: str, n: int, total: int, concurrency: int, warmup: int) -> None:
    # raw nats-py request/reply
    nc = await nats.connect(url)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("bench.raw", cb=echo)

    async def raw_call(i: int) -> None:
        await nc.request("bench.raw", b"ping %d" % i, timeout=10)

    # mesh request -> resolve
    responder = AsyncAgent("bench-memory", servers=url, max_in_flight=max(256, concurrency))
    requester = AsyncAgent("bench-client", servers=url, max_in_flight=max(256, concurrency))

    @responder.on_message
    async def answer(msg: Message) -> None:
        await responder.resolve(msg.session, msg.payload)

    async def mesh_call(i: int) -> None:
        await requester.request("bench-memory", f"ping {i}", timeout=30)

    async with responder, requester:
        await responder.register()
        await requester.register()
        await sequential(raw_call, warmup)
        await sequential(mesh_call, warmup)

        raw_seq = await sequential(raw_call, n)
        mesh_seq = await sequential(mesh_call, n)
        raw_rate, raw_conc = await concurrent(raw_call, total, concurrency)
        mesh_rate, mesh_conc = await concurrent(mesh_call, total, concurrency)
    await nc.close()

    def ms(v: float) -> str:
        return f"{v * 1e3:9.3f}"

    rows = [
        ("round trip p50 (ms), sequential", ms(pct(mesh_seq, 0.5)), ms(pct(raw_seq, 0.5)),
         pct(mesh_seq, 0.5) / pct(raw_seq, 0.5)),
        ("round trip p99 (ms), sequential", ms(pct(mesh_seq, 0.99)), ms(pct(raw_seq, 0.99)),
         pct(mesh_seq, 0.99) / pct(raw_seq, 0.99)),
        ("round trip mean (ms), sequential", ms(statistics.fmean(mesh_seq)), ms(statistics.fmean(raw_seq)),
         statistics.fmean(mesh_seq) / statistics.fmean(raw_seq)),
        (f"round trip p50 (ms), {concurrency} concurrent", ms(pct(mesh_conc, 0.5)), ms(pct(raw_conc, 0.5)),
         pct(mesh_conc, 0.5) / pct(raw_conc, 0.5)),
        (f"round trip p99 (ms), {concurrency} concurrent", ms(pct(mesh_conc, 0.99)), ms(pct(raw_conc, 0.99)),
         pct(mesh_conc, 0.99) / pct(raw_conc, 0.99)),
        (f"sessions/s, {concurrency} concurrent", f"{mesh_rate:9.0f}", f"{raw_rate:9.0f}", mesh_rate / raw_rate),
    ]
    print(f"\nmesh request->resolve vs raw nats-py request/reply  ({n} sequential, {total} at "
          f"concurrency {concurrency}, server {url})\n")
    print(f"{'metric':<38} {'mesh':>10} {'raw nats':>10} {'mesh/raw':>9}")
    print("-" * 70)
    for name, mesh_v, raw_v, ratio in rows:
        print(f"{name:<38} {mesh_v:>10} {raw_v:>10} {ratio:>9.2f}")
    p50 = pct(mesh_seq, 0.5) * 1e3
    print(f"\ntargets: p50 <= 2 ms: {'met' if p50 <= 2 else 'MISSED'} ({p50:.3f} ms); "
          f">= 2000 sessions/s: {'met' if mesh_rate >= 2000 else 'MISSED'} ({mesh_rate:.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="use this server (JetStream enabled) instead of starting one")
    parser.add_argument("--n", type=int, default=2000, help="sequential round trips per side")
    parser.add_argument("--sessions", type=int, default=10000, help="sessions per side in the concurrent run")
    parser.add_argument("--concurrency", type=int, default=100, help="sessions in flight at once")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    if args.nats_url:
        asyncio.run(run(args.nats_url, args.n, args.sessions, args.concurrency, args.warmup))
        return
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=Path(store)) as server:
        asyncio.run(run(server.url, args.n, args.sessions, args.concurrency, args.warmup))


if __name__ == "__main__":
    main()
