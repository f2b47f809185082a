"""The embedder alone, per backend: batch throughput (texts/s), query latency, and agreement with torch fp32.

    python bench/embedder.py [--backend torch,onnx,onnx-int8] [--texts 1024] [--batch-sizes 16 64 128]
                             [--threads 0] [--no-append]

Texts are the report texts of bench/ingest.py (memory_agent.wire.indexed_text of varied reports). Per
backend (loaded as the daemon loads it, ONNX exports cached in a temp data directory): raw ``encode``
throughput at each batch size after a warm-up batch; the same texts through BatchingEmbedder with one
text per call, all in flight (how the daemon coalesces reports); the median latency of one query
embedding (one short question, 50 times); and the cosine of each row to torch fp32's (min and mean).
Prints a table and appends it to docs/benchmarks.md (date, machine, versions, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ingest import append_doc, machine, make_reports, report_texts

from memory_agent.config import EmbeddingConfig
from memory_agent.embedding.base import load_embedder
from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.protocols import Embedder

SECTION = "## Embedder (bench/embedder.py)"
INTRO = (
    "The embedder alone on the report texts of bench/ingest.py: raw `encode` throughput per batch size, the "
    "same through BatchingEmbedder (one text per call, all in flight), the median latency of one query "
    "embedding, and the cosine of each vector to torch fp32's."
)


def raw_rate(model: Embedder, texts: list[str], batch: int) -> tuple[float, float]:
    """(texts/s, CPU ms per text of this process) encoding ``texts`` in calls of ``batch``. The CPU figure
    is steadier than the wall clock on a machine other work shares."""
    model.encode(texts[:batch])  # warm-up
    cpu = time.process_time()
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        model.encode(texts[start : start + batch])
    return len(texts) / (time.perf_counter() - started), 1e3 * (time.process_time() - cpu) / len(texts)


async def batching_rate(model: Embedder, texts: list[str], max_batch: int) -> tuple[float, int]:
    batching = BatchingEmbedder(model, max_batch=max_batch)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(batching.embed([t]) for t in texts))  # one report per call, all in flight
        return len(texts) / (time.perf_counter() - started), batching.batches
    finally:
        await batching.close()


def query_ms(model: Embedder, runs: int = 50) -> float:
    question = "why did the payments service roll back on friday?"
    model.encode([question])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.encode([question])
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="torch,onnx,onnx-int8", help="comma-separated: torch, onnx, onnx-int8")
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--threads", type=int, default=0, help="embedding.threads (0 = the library default)")
    parser.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    texts = report_texts(make_reports(args.texts, seed=1))
    reference = None
    head = ["backend", "model name", "load s", *(f"encode b={b} texts/s (CPU ms/text)" for b in args.batch_sizes),
            f"batching max={max(args.batch_sizes)} texts/s", "query ms (median)", "cosine to torch min / mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as tmp:
        if "torch" not in backends[:1]:
            reference = load_embedder(EmbeddingConfig(threads=args.threads), data_dir=Path(tmp)).encode(texts)
        for backend in backends:
            config = EmbeddingConfig(backend=backend, threads=args.threads)  # type: ignore[arg-type]
            started = time.perf_counter()
            model = load_embedder(config, data_dir=Path(tmp))
            load_s = time.perf_counter() - started
            rates = [raw_rate(model, texts, b) for b in args.batch_sizes]
            batched, calls = asyncio.run(batching_rate(model, texts, max(args.batch_sizes)))
            latency = query_ms(model)
            vectors = model.encode(texts)
            if reference is None:
                reference = vectors
            cosine = (vectors * reference).sum(axis=1)
            row = [backend, model.name, f"{load_s:.1f}", *(f"{r:.0f} ({c:.1f})" for r, c in rates),
                   f"{batched:.0f} ({calls} calls)",
                   f"{latency:.1f}", f"{float(np.min(cosine)):.4f} / {float(np.mean(cosine)):.4f}"]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    lines += ["", f"{len(texts)} report texts; embedding threads {args.threads or 'default'}; the first ONNX load "
              "includes the one-time export."]
    print("\n".join(lines))
    print(f"\n{machine()}")
    if not args.no_append:
        append_doc(lines, "python bench/embedder.py " + " ".join(sys.argv[1:]), section=SECTION, intro=INTRO)


if __name__ == "__main__":
    main()
