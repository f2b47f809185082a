"""Vector memory through the real daemon: namespaces with a fixed dimension, cosine search with metadata
filters and a floor, deletes, and the FAISS files kept like the events' (restart, rebuild, export/import)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.config import Config
from memory_agent.errors import DimensionMismatch, SharedMemoryError
from memory_agent.tools.importer import import_events
from memory_agent.tools.snapshot import export_events
from tests.conftest import CountingEmbedder, DaemonFactory
from tests.shared.conftest import ClientFactory

pytestmark = pytest.mark.timeout(60)


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


async def test_set_search_and_delete_vectors_by_namespace(memory: Any, client: ClientFactory) -> None:
    c = await client("retriever")
    assert (await c.set_vector("runbook:db", [1.0, 0.0, 0.0], {"team": "db", "tier": 1}))["replaced"] is False
    await c.set_vector("runbook:net", np.array([0.0, 1.0, 0.0]), {"team": "net", "tier": 1})
    await c.set_vector("runbook:db2", [0.9, 0.1, 0.0], {"team": "db", "tier": 2})
    await c.set_vector("doc", [1.0, 0.0], namespace="small")  # another namespace, another dimension

    hits = await c.similarity_search([1.0, 0.05, 0.0], top_k=2)
    assert [h.key for h in hits] == ["runbook:db", "runbook:db2"]
    assert hits[0].score == pytest.approx(float(_unit(1, 0.05, 0) @ _unit(1, 0, 0)), abs=1e-5)
    assert hits[0].metadata == {"team": "db", "tier": 1} and hits[0].updated_by == "retriever"
    assert [h.key for h in await c.similarity_search([1.0, 0.05, 0.0], filter={"team": "net"})] == ["runbook:net"]
    assert [h.key for h in await c.similarity_search([1.0, 0.05, 0.0], filter={"team": "db", "tier": 2})] == [
        "runbook:db2"]
    assert await c.similarity_search([1.0, 0.0, 0.0], filter={"team": "nobody"}) == []
    assert [h.key for h in await c.similarity_search([1.0, 0.0, 0.0], min_score=0.5)] == ["runbook:db", "runbook:db2"]
    assert await c.similarity_search([1.0, 0.0], namespace="unknown") == []

    # Replacing keeps one vector per key; deleting removes it from FAISS and SQLite.
    assert (await c.set_vector("runbook:db", [0.0, 0.0, 1.0], {"team": "db", "tier": 3}))["replaced"] is True
    assert (await c.similarity_search([0.0, 0.0, 1.0], top_k=1))[0].metadata["tier"] == 3
    assert await c.delete_vector("runbook:db") is True and await c.delete_vector("runbook:db") is False
    assert [h.key for h in await c.similarity_search([0.0, 0.0, 1.0], top_k=10)] == ["runbook:db2", "runbook:net"]
    stats = (await c.stats())["shared"]
    assert stats["namespaces"] == {"default": {"dim": 3, "vectors": 2}, "small": {"dim": 2, "vectors": 1}}


async def test_a_dimension_mismatch_and_bad_embeddings_are_refused(memory: Any, client: ClientFactory) -> None:
    c = await client("retriever")
    await c.set_vector("a", [1.0, 0.0, 0.0], namespace="docs")
    with pytest.raises(DimensionMismatch) as mismatch:
        await c.set_vector("b", [1.0, 0.0], namespace="docs")
    assert (mismatch.value.namespace, mismatch.value.expected, mismatch.value.got) == ("docs", 3, 2)
    assert "fixed by its first vector" in str(mismatch.value)
    with pytest.raises(DimensionMismatch):
        await c.similarity_search([1.0, 0.0], namespace="docs")
    for bad, problem in (([float("nan"), 1.0, 0.0], "NaN"), (["x", 1, 2], "numbers only"), ([0, 0, 0], "all zeros"),
                         ("1,2,3", "list of numbers")):
        with pytest.raises(SharedMemoryError, match=problem):
            await c.set_vector("c", bad, namespace="docs")  # type: ignore[arg-type]
    for top_k in (0, 1001):
        with pytest.raises(SharedMemoryError, match="top_k"):
            await c.similarity_search([1.0, 0.0, 0.0], top_k=top_k, namespace="docs")
    # Raw requests get the same errors from @memory, which stored nothing.
    reply = await c.agent.request("memory", json.dumps({"op": "vector.set", "key": "d", "namespace": "docs",
                                                        "embedding": {"base64": "AACAPw=="}}), timeout=10)
    assert json.loads(reply.payload)["code"] == "dimension_mismatch"
    assert [h.key for h in await c.similarity_search([1.0, 0.0, 0.0], namespace="docs", top_k=10)] == ["a"]
    # An emptied namespace forgets its dimension.
    await c.delete_vector("a", namespace="docs")
    await c.set_vector("b", [1.0, 0.0], namespace="docs")


async def test_vectors_survive_a_restart_and_a_lost_faiss_file(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory, tmp_path: Path
) -> None:
    daemon = await make_daemon(nats_url, clock=time.time)
    c = await client("keeper")
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    for i, v in enumerate(vectors):
        await c.set_vector(f"v{i}", v, {"even": i % 2 == 0})
    await daemon.close()
    files = sorted(p.name for p in (tmp_path / "data" / "vectors").iterdir())
    assert files == ["default.faiss", "default.faiss.json"]

    restarted = await make_daemon(nats_url, clock=time.time)
    assert "rebuilt" not in restarted._vectors.report  # type: ignore[union-attr]
    assert [h.key for h in await c.similarity_search(vectors[7], top_k=1)] == ["v7"]
    await restarted.close()

    (tmp_path / "data" / "vectors" / "default.faiss").write_bytes(b"not faiss")
    repaired = await make_daemon(nats_url, clock=time.time)
    assert "rebuilt from SQLite: default" in repaired._vectors.report  # type: ignore[union-attr]
    hits = await c.similarity_search(vectors[8], top_k=3, filter={"even": True})
    assert hits[0].key == "v8" and all(int(h.key[1:]) % 2 == 0 for h in hits)


async def test_vector_memory_travels_in_an_export_and_import(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory, tmp_path: Path
) -> None:
    daemon = await make_daemon(nats_url, clock=time.time)
    c = await client("exporter")
    await c.report({"event": "rollback", "service": "api"})
    await c.set_vector("a", [1.0, 0.0, 0.0], {"k": "é"}, namespace="docs")
    await c.set_vector("b", [0.0, 1.0, 0.0], namespace="docs")
    await c.set_vector("x", [1.0, 1.0], namespace="pairs")
    buffer = io.StringIO()
    done = await _in_thread(export_events, daemon.config.db_path, buffer, progress=False)
    assert (done.events, done.vectors) == (1, 3)
    lines = buffer.getvalue().splitlines()
    assert json.loads(lines[1])["kind"] == "vector" and len(buffer.getvalue()) == done.bytes
    await daemon.close()

    target = Config(data_dir=tmp_path / "copy", nats_url=nats_url)
    source = tmp_path / "export.jsonl"
    source.write_text(buffer.getvalue())
    imported = await import_events(target, source, embedder=CountingEmbedder(), progress=False)
    assert (imported.stored, imported.vectors) == (1, 3) and "3 vectors" in imported.line()
    again = await import_events(target, source, embedder=CountingEmbedder(), progress=False)
    assert (again.duplicates, again.vectors) == (1, 3)  # the same keys again: replaced, not doubled
    copy = await make_daemon(nats_url, clock=time.time, data_dir=tmp_path / "copy")
    assert copy._vectors is not None and copy._vectors.stats()["vectors"] == 3
    hits = await c.similarity_search([0.9, 0.1, 0.0], namespace="docs", top_k=5)
    assert [(h.key, h.metadata) for h in hits] == [("a", {"k": "é"}), ("b", {})]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"kind": "vector", "namespace": "docs", "key": "z", "embedding": {"values": [1, 0]}}) + "\n")
    await copy.close()
    with pytest.raises(Exception, match=r"docs.*3-dimensional"):
        await import_events(target, bad, embedder=CountingEmbedder(), progress=False)


async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)
