"""Benchmark: room posts, from post_room_message() until every other member's handler has the event.

    python bench/mesh_rooms.py                            # starts its own nats-server (temp store)
    python bench/mesh_rooms.py --members 6 --posts 500 --concurrency 20

Measures (a) sequential posts by one member to a room of ``--members`` agents: the post call's latency
(compare-and-set on the room record plus one JetStream publish per member) and the fan-out latency
(until the last other member's handler has run), p50/p99; and (b) ``--concurrency`` posts in flight at
once: posts/s and events delivered/s. Beside it, the mesh's own session round trip (request ->
resolve) in the same run, for scale. All agents share one process and one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from mesh import AsyncAgent, Message, NatsServer, RoomEvent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, members: int, posts: int, concurrency: int) -> None:
    agents = [AsyncAgent(f"m{i}", servers=url, max_in_flight=256) for i in range(members)]
    arrived: dict[str, list[float]] = {}
    done: dict[str, asyncio.Event] = {}
    expected = members - 1

    def listen(agent: AsyncAgent) -> None:
        @agent.on_message
        async def on_message(msg: Message | RoomEvent) -> None:
            if isinstance(msg, Message):  # sessions too, for the comparison
                await agent.resolve(msg.session, "ok")
            elif msg.event_type == "message_posted":
                times = arrived.setdefault(msg.payload, [])
                times.append(time.perf_counter())
                if len(times) == expected:
                    done[msg.payload].set()

    for agent in agents[1:]:
        listen(agent)

    poster = agents[0]
    try:
        for agent in agents:
            await agent.start()
            await agent.register()
        room_id = await poster.create_room("bench", [a.handle for a in agents[1:]], max_events=10 * posts + 100)

        async def post(key: str) -> tuple[float, float]:
            done[key] = asyncio.Event()
            t0 = time.perf_counter()
            await poster.post_room_message(room_id, key)
            t1 = time.perf_counter()
            await asyncio.wait_for(done[key].wait(), 30)
            return (t1 - t0) * 1e3, (max(arrived[key]) - t0) * 1e3

        for i in range(50):
            await post(f"warm-{i}")
        seq = [await post(f"seq-{i}") for i in range(posts)]
        calls, fanout = [c for c, _ in seq], [f for _, f in seq]

        slots = asyncio.Semaphore(concurrency)

        async def bounded(i: int) -> tuple[float, float]:
            async with slots:
                return await post(f"conc-{i}")

        t = time.perf_counter()
        await asyncio.gather(*(bounded(i) for i in range(posts)))
        elapsed = time.perf_counter() - t

        rtt = []
        for _ in range(200):
            t0 = time.perf_counter()
            await poster.request("m1", "ping", timeout=10)
            rtt.append((time.perf_counter() - t0) * 1e3)
    finally:
        for agent in reversed(agents):
            await agent.close()

    load = os.getloadavg()[0]
    print(f"room of {members} members, {posts} posts; load average {load:.2f}")
    print(f"{'metric':<48}{'value':>10}")
    print("-" * 58)
    print(f"{'post_room_message() p50 / p99 (ms), sequential':<48}{pct(calls, .5):>5.2f} / {pct(calls, .99):.2f}")
    print(f"{'until all members have it p50 / p99 (ms)':<48}{pct(fanout, .5):>5.2f} / {pct(fanout, .99):.2f}")
    print(f"{f'posts/s, {concurrency} in flight':<48}{posts / elapsed:>10.0f}")
    print(f"{f'events delivered/s, {concurrency} in flight':<48}{posts * expected / elapsed:>10.0f}")
    print(f"{'session request->resolve p50 (ms), for scale':<48}{pct(rtt, .5):>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="use this server (JetStream enabled) instead of starting one")
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    if args.members < 2:
        parser.error("--members must be at least 2")
    if args.nats_url:
        asyncio.run(run(args.nats_url, args.members, args.posts, args.concurrency))
        return
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=Path(store)) as server:
        asyncio.run(run(server.url, args.members, args.posts, args.concurrency))


if __name__ == "__main__":
    main()
