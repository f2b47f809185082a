"""Shared memory's latency through the mesh, beside raw JetStream KV in the same run (issue 12).

    python bench/shared_memory.py                          # 2,000 rounds, 100,000 vectors of 384 dims
    python bench/shared_memory.py --rounds 300 --vectors 20000 --no-append

A real nats-server (JetStream, temp store) and ``memory-agent run`` as a separate process (as in production).
Then, in this process, one round after another, each round doing once, in this order:

* raw: nats-py ``KeyValue.put`` and ``KeyValue.get`` on a bucket configured like ``memory_state`` (file
  storage, history 1, direct gets), and a raw KV watcher's delivery of that put;
* mesh: ``MemoryClient.set`` (a ``kv.set`` request to @memory: session, compare-and-set write, change event,
  resolve), the change event's delivery to another agent's ``on_change`` stream (from just before ``set`` to
  its arrival), ``kv.get`` through @memory (a client with ``direct_reads=False``), and the SDK's ``get``,
  which reads the bucket directly (one direct get per scope of the hierarchical lookup, all at once).

Interleaving puts every variant under the same load. Last, vector memory: ``--vectors`` random unit vectors of
``--dim`` dimensions (with a ``group`` metadata field of 10 values) are imported with ``memory-agent import``
before the daemon starts, then ``similarity_search`` (top 10) runs ``--searches`` times through the mesh,
unfiltered and filtered to one group. Prints a table and appends it to docs/benchmarks.md with the date,
machine, load average, versions and commit. Targets: get p99 <= 10 ms, set p99 <= 20 ms (AgentField's stated
figures), change delivered p99 <= 20 ms, vector.search p99 <= 30 ms at 100k x 384.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from nats.js.api import KeyValueConfig, StorageType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import REPO, append_doc, start_daemon, stop_daemon

from memory_agent.client import MemoryClient
from mesh import AsyncAgent, NatsServer
from mesh.access import jetstream

SECTION = "## Shared memory (bench/shared_memory.py)"
INTRO = (
    "Latency of shared memory's operations, one at a time, through the mesh and @memory (a `memory-agent run` "
    "process), beside nats-py's own JetStream KV put/get/watch on a bucket configured the same way, interleaved "
    "round by round in one run. Targets (issue 12): get p99 <= 10 ms, set p99 <= 20 ms, change delivered p99 "
    "<= 20 ms, vector.search p99 <= 30 ms at 100k vectors of 384 dims."
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_vectors(path: Path, n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors as vector lines of the export format; returns 20 of them as queries."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for start in range(0, n, 10_000):
            block = rng.normal(size=(min(10_000, n - start), dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            for i, vector in enumerate(block, start=start):
                b64 = base64.b64encode(vector.astype("<f4").tobytes()).decode()
                out.write(json.dumps({"kind": "vector", "namespace": "bench", "key": f"doc-{i}",
                                      "metadata": {"group": i % 10}, "updated_at": 0.0, "updated_by": "bench",
                                      "embedding": {"dim": dim, "base64": b64}}) + "\n")
    queries = rng.normal(size=(64, dim)).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


async def kv_rounds(url: str, rounds: int, warmup: int) -> dict[str, list[float]]:
    agents = [AsyncAgent(h, servers=url) for h in ("bench-writer", "bench-reader", "bench-listener")]
    for agent in agents:
        await agent.start()
        await agent.register()
    writer = await MemoryClient(agent=agents[0], workflow_id="bench", timeout=30).start()
    via_memory = await MemoryClient(agent=agents[1], workflow_id="bench", timeout=30, direct_reads=False).start()
    listener = await MemoryClient(agent=agents[2], timeout=30).start()
    js = jetstream(agents[0])
    raw = await js.create_key_value(KeyValueConfig(bucket="bench_raw", history=1, storage=StorageType.FILE,
                                                   direct=True))
    raw_watch = await raw.watch(">")
    while await raw_watch.updates(timeout=5) is not None:  # the initial marker
        pass
    timings: dict[str, list[float]] = {k: [] for k in (
        "raw put", "raw get", "raw watch delivery", "set", "change delivered (set start -> on_change)",
        "change delivered (published -> on_change)", "get through @memory", "get, SDK direct")}
    async with listener.workflow("bench").watch("k.*") as changes:
        for i in range(warmup + rounds):
            record = i >= warmup
            key = f"k.{i % 50}"
            value = {"round": i, "text": "x" * 200}
            body = json.dumps(value).encode()

            t = time.perf_counter()
            await raw.put(key, body)
            t_put = time.perf_counter()
            await raw.get(key)
            t_get = time.perf_counter()
            update = await raw_watch.updates(timeout=5)
            t_watch = time.perf_counter()
            assert update is not None and update.key == key

            t_set = time.perf_counter()
            await writer.set(key, value)
            t_set_done = time.perf_counter()
            event = await changes.next(timeout=10)
            t_event = time.perf_counter()
            wall_event = time.time()
            assert event is not None and event.data == value, event

            t_mesh_get = time.perf_counter()
            assert await via_memory.get(key) == value
            t_mesh_got = time.perf_counter()
            assert await writer.get(key) == value
            t_direct = time.perf_counter()
            if record:
                timings["raw put"].append(t_put - t)
                timings["raw get"].append(t_get - t_put)
                timings["raw watch delivery"].append(t_watch - t_put)
                timings["set"].append(t_set_done - t_set)
                timings["change delivered (set start -> on_change)"].append(t_event - t_set)
                timings["change delivered (published -> on_change)"].append(max(wall_event - event.at, 0.0))
                timings["get through @memory"].append(t_mesh_got - t_mesh_get)
                timings["get, SDK direct"].append(t_direct - t_mesh_got)
    await raw_watch.stop()
    await js.delete_key_value("bench_raw")
    for client in (writer, via_memory, listener):
        await client.close()
    for agent in agents:
        await agent.close()
    return timings


async def vector_rounds(url: str, queries: np.ndarray, searches: int) -> dict[str, list[float]]:
    agent = AsyncAgent("bench-vectors", servers=url)
    await agent.start()
    await agent.register()
    client = await MemoryClient(agent=agent, timeout=60).start()
    timings: dict[str, list[float]] = {"vector.search top 10": [], "vector.search top 10, filter 1 of 10 groups": []}
    for i in range(20 + searches):
        query = queries[i % len(queries)]
        t = time.perf_counter()
        hits = await client.similarity_search(query, 10, namespace="bench")
        t_plain = time.perf_counter()
        filtered = await client.similarity_search(query, 10, namespace="bench", filter={"group": i % 10})
        t_filter = time.perf_counter()
        assert len(hits) == 10 and all(h.metadata["group"] == i % 10 for h in filtered)
        if i >= 20:
            timings["vector.search top 10"].append(t_plain - t)
            timings["vector.search top 10, filter 1 of 10 groups"].append(t_filter - t_plain)
    await client.close()
    await agent.close()
    return timings


def faiss_alone(path: Path, queries: np.ndarray, searches: int) -> dict[str, list[float]]:
    """The exact FAISS scan vector memory does, in this process, on the same vectors (one thread, as the
    daemon's): how much of a search's time is the scan itself."""
    import faiss

    from memory_agent.index.flat import FlatIndex

    faiss.omp_set_num_threads(1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    matrix = np.vstack([np.frombuffer(base64.b64decode(r["embedding"]["base64"]), dtype="<f4") for r in rows])
    index = FlatIndex(matrix.shape[1])
    index.add(np.arange(1, len(matrix) + 1), matrix)
    timings: list[float] = []
    for i in range(20 + searches):
        t = time.perf_counter()
        index.search(queries[i % len(queries)], 10)
        if i >= 20:
            timings.append(time.perf_counter() - t)
    return {"FAISS exact scan alone, in-process (part of vector.search)": timings}


def table(kv: dict[str, list[float]], vectors: dict[str, list[float]]) -> list[str]:
    lines = ["| operation | p50 (ms) | p99 (ms) | n |", "|---|---:|---:|---:|"]
    for name, values in [*kv.items(), *vectors.items()]:
        lines.append(f"| {name} | {1e3 * pct(values, 0.5):.2f} | {1e3 * pct(values, 0.99):.2f} | {len(values)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--no-append", action="store_true", help="Print only; do not append to docs/benchmarks.md.")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        work = Path(tmp)
        data = work / "data"
        print(f"writing {args.vectors} vectors of {args.dim} dims and importing them ...", flush=True)
        queries = write_vectors(work / "vectors.jsonl", args.vectors, args.dim)
        env = {**os.environ, "MEMORY_AGENT_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "memory_agent", "import", str(work / "vectors.jsonl")],
                              env=env, cwd=work, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"import failed: {done.stderr[-2000:]}")
        import_s = time.perf_counter() - started
        with NatsServer(store_dir=work / "nats") as server:
            daemon, start_s = start_daemon(server.url, data, "torch", argparse.Namespace(
                threads=0, max_batch=128, max_in_flight=0))
            try:
                print(f"@memory up in {start_s:.1f} s; {args.rounds} rounds ...", flush=True)
                kv = asyncio.run(kv_rounds(server.url, args.rounds, args.warmup))
                print(f"{args.searches} searches ...", flush=True)
                vectors = asyncio.run(vector_rounds(server.url, queries, args.searches))
            finally:
                stop_daemon(daemon)
        vectors.update(faiss_alone(work / "vectors.jsonl", queries, args.searches))
    lines = table(kv, vectors)
    load_after = os.getloadavg()
    lines += ["", f"{args.rounds} rounds after {args.warmup} warm-up rounds; values of about 220 bytes, 50 keys. "
              f"Vector memory: {args.vectors:,} random unit vectors of {args.dim} dims in one namespace (exact "
              f"FAISS search), imported in {import_s:.1f} s; {args.searches} searches of each kind after 20 warm-up. "
              f"@memory started in {start_s:.1f} s. Load average before: {load_before[0]:.1f} / {load_before[1]:.1f} "
              f"/ {load_before[2]:.1f}, after: {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} "
              "(1/5/15 min)."]
    print("\n".join(lines))
    if not args.no_append:
        command = "python bench/shared_memory.py" + " ".join(
            f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k != "no_append" and v != parser.get_default(k))
        append_doc(lines, command, section=SECTION, intro=INTRO)


if __name__ == "__main__":
    main()
