"""HashingEmbedder, BatchingEmbedder (coalescing, errors, close) and, marked slow, the real MiniLM."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_agent.embedder import BatchingEmbedder, Embedder, HashingEmbedder, SentenceTransformerEmbedder
from memory_agent.errors import ConfigError, MemoryAgentError

pytestmark = pytest.mark.timeout(60)


class GatedEmbedder(HashingEmbedder):
    """A real HashingEmbedder that records every encode call; the first call waits for ``gate``."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        super().__init__(16)
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.fail_on = fail_on

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.started.set()
        if not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot embed {self.fail_on!r}")
        return super().encode(texts)


async def hold_first_batch(batching: BatchingEmbedder, emb: GatedEmbedder) -> asyncio.Task[np.ndarray]:
    """Start one request and wait until its encode is running on the worker thread (gate closed)."""
    first = asyncio.create_task(batching.embed(["first"]))
    assert await asyncio.to_thread(emb.started.wait, 10)
    return first


def test_hashing_embedder_shape_norm_determinism() -> None:
    emb = HashingEmbedder()
    assert isinstance(emb, Embedder) and emb.dim == 64 and emb.name == "hashing-64"
    texts = ["Rollback of api-gateway", "rollback of API-gateway", "flaky test quarantined", ""]
    out = emb.encode(texts)
    assert out.shape == (4, 64) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out[:3], axis=1), 1.0, atol=1e-6)
    assert not out[3].any()  # nothing to hash
    assert np.array_equal(out[0], out[1])  # lower-cased
    assert np.array_equal(HashingEmbedder().encode(texts), out)  # deterministic across instances
    query = emb.encode(["api-gateway rolled back"])[0]
    assert query @ out[0] > query @ out[2]
    assert emb.encode([]).shape == (0, 64)
    with pytest.raises(ConfigError):
        HashingEmbedder(0)


async def test_concurrent_calls_are_coalesced_into_few_encodes() -> None:
    emb = GatedEmbedder()
    batching = BatchingEmbedder(emb, max_batch=32)
    try:
        first = await hold_first_batch(batching, emb)
        texts = [f"report number {i}" for i in range(100)]
        tasks = [asyncio.create_task(batching.embed([t])) for t in texts]
        while batching.pending < 100:
            await asyncio.sleep(0)
        emb.gate.set()
        results = await asyncio.gather(*tasks)
        await first
        assert [len(c) for c in emb.calls] == [1, 32, 32, 32, 4]
        assert batching.batches == 5 and batching.texts == 101
        expected = HashingEmbedder(16).encode(texts)
        for got, want in zip(results, expected, strict=True):
            assert got.shape == (1, 16)
            assert np.array_equal(got[0], want)
    finally:
        await batching.close()


async def test_gathered_calls_share_one_encode_and_large_requests_go_whole() -> None:
    emb = GatedEmbedder()
    emb.gate.set()
    batching = BatchingEmbedder(emb, max_batch=8)
    try:
        outs = await asyncio.gather(*(batching.embed([f"a {i}", f"b {i}"]) for i in range(4)))
        assert [len(c) for c in emb.calls] == [8]
        assert all(o.shape == (2, 16) for o in outs)
        big = await batching.embed([f"text {i}" for i in range(20)])
        assert big.shape == (20, 16) and len(emb.calls[-1]) == 20
        q = await batching.embed_query("rollback")
        assert q.shape == (16,) and np.array_equal(q, HashingEmbedder(16).encode(["rollback"])[0])
        assert (await batching.embed([])).shape == (0, 16)
        assert batching.name == emb.name and batching.dim == 16
    finally:
        await batching.close()


async def test_encode_errors_reach_exactly_the_callers_of_that_batch() -> None:
    emb = GatedEmbedder(fail_on="boom")
    batching = BatchingEmbedder(emb, max_batch=2)
    try:
        first = await hold_first_batch(batching, emb)
        a = asyncio.create_task(batching.embed(["fine"]))
        b = asyncio.create_task(batching.embed(["boom"]))
        c = asyncio.create_task(batching.embed(["also fine"]))
        while batching.pending < 3:
            await asyncio.sleep(0)
        emb.gate.set()
        results: list[object] = list(await asyncio.gather(a, b, c, return_exceptions=True))
        ra, rb, rc = results
        assert (await first).shape == (1, 16)
        assert [c_ for c_ in emb.calls] == [["first"], ["fine", "boom"], ["also fine"]]
        assert isinstance(ra, RuntimeError) and isinstance(rb, RuntimeError) and "boom" in str(rb)
        assert isinstance(rc, np.ndarray) and rc.shape == (1, 16)
        assert batching.batches == 2  # failed encodes are not counted
        assert (await batching.embed(["after the error"])).shape == (1, 16)  # the worker survived
    finally:
        await batching.close()


async def test_cancelled_caller_does_not_disturb_others() -> None:
    emb = GatedEmbedder()
    batching = BatchingEmbedder(emb)
    try:
        first = await hold_first_batch(batching, emb)
        gone = asyncio.create_task(batching.embed(["cancelled"]))
        kept = asyncio.create_task(batching.embed(["kept"]))
        while batching.pending < 2:
            await asyncio.sleep(0)
        gone.cancel()
        emb.gate.set()
        assert (await kept).shape == (1, 16)
        await first
        assert emb.calls == [["first"], ["kept"]]
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await batching.close()


async def test_wrong_shape_from_embedder_is_an_error_and_close_drains() -> None:
    class Broken(HashingEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((len(texts) + 1, self.dim), dtype=np.float32)

    broken = BatchingEmbedder(Broken(8))
    with pytest.raises(MemoryAgentError, match="shape"):
        await broken.embed(["x"])
    await broken.close()

    emb = GatedEmbedder()
    batching = BatchingEmbedder(emb)
    first = await hold_first_batch(batching, emb)
    queued = asyncio.create_task(batching.embed(["queued before close"]))
    while batching.pending < 1:
        await asyncio.sleep(0)
    closing = asyncio.create_task(batching.close())
    await asyncio.sleep(0)
    emb.gate.set()
    await closing
    assert (await first).shape == (1, 16) and (await queued).shape == (1, 16)
    with pytest.raises(MemoryAgentError, match="closed"):
        await batching.embed(["too late"])
    await batching.close()  # idempotent


def test_unloadable_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model"))


@pytest.mark.slow
@pytest.mark.timeout(170)
async def test_real_minilm_embedder() -> None:
    model = SentenceTransformerEmbedder()
    assert model.name == "all-MiniLM-L6-v2" and model.dim == 384
    batching = BatchingEmbedder(model)
    try:
        texts = ["rollback of api-gateway", "api-gateway rolled back", "flaky test quarantined"]
        out = await batching.embed(texts)
        assert out.shape == (3, 384) and out.dtype == np.float32
        assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        assert out[0] @ out[1] > out[0] @ out[2]
        q = await batching.embed_query("rollback of api-gateway")
        assert np.allclose(q, out[0], atol=1e-5)
    finally:
        await batching.close()
