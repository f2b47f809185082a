"""Throughput of the raw embedder (texts/s) at several encode batch sizes, and through BatchingEmbedder.

    python bench/embedder.py [--texts 512] [--model PATH_OR_NAME] [--batch-sizes 16 64 128]

Texts look like event reports (event, service, a few words of payload). Prints one line per batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

from memory_agent.embedder import BatchingEmbedder, SentenceTransformerEmbedder

EVENTS = ["deploy", "rollback", "test_failed", "incident_opened", "alert", "merge", "build_failed"]
SERVICES = ["api-gateway", "billing", "payments", "search", "auth", "notifications", "ledger"]
_WORDS_TEXT = (
    "latency spike error budget canary timeout retry flaky quarantined migration schema cache miss "
    "memory leak rollout region eu-west-1 version v2.3.1 owner oncall page resolved degraded"
)
WORDS = _WORDS_TEXT.split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.choice(EVENTS)} {rng.choice(SERVICES)}: " + " ".join(rng.choices(WORDS, k=rng.randint(6, 18)))
        for _ in range(n)
    ]


def bench_raw(model: SentenceTransformerEmbedder, texts: list[str], batch: int) -> float:
    model.batch_size = batch
    model.encode(texts[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        model.encode(texts[start : start + batch])
    return len(texts) / (time.perf_counter() - started)


async def bench_batching(
    model: SentenceTransformerEmbedder, texts: list[str], max_batch: int
) -> tuple[float, int]:
    batching = BatchingEmbedder(model, max_batch=max_batch)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(batching.embed([t]) for t in texts))  # one report per call, all in flight
        return len(texts) / (time.perf_counter() - started), batching.batches
    finally:
        await batching.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument(
        "--model", default=None, help="model name or path (default: bundled all-MiniLM-L6-v2)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    args = parser.parse_args()

    import torch

    texts = make_texts(args.texts)
    started = time.perf_counter()
    model = SentenceTransformerEmbedder(args.model)
    print(
        f"model {model.name} dim {model.dim} loaded in {time.perf_counter() - started:.1f} s; "
        f"cpus {os.cpu_count()} torch threads {torch.get_num_threads()}; {len(texts)} texts"
    )
    for batch in args.batch_sizes:
        print(f"raw encode     batch {batch:4d}: {bench_raw(model, texts, batch):8.1f} texts/s")
    for batch in args.batch_sizes:
        model.batch_size = batch
        rate, calls = asyncio.run(bench_batching(model, texts, batch))
        print(f"BatchingEmbedder max {batch:4d}: {rate:8.1f} texts/s ({calls} encode calls)")


if __name__ == "__main__":
    main()
