"""export / import against real SQLite files, FAISS and (in the CLI test) the real MiniLM model."""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.config import Config, IndexConfig
from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.errors import DataDirLocked, SnapshotError
from memory_agent.index.repair import open_index
from memory_agent.store.events import EventStore
from memory_agent.tools.datadir import lock_data_dir
from memory_agent.tools.importer import import_events
from memory_agent.tools.reindex import reindex
from memory_agent.tools.snapshot import FIELDS, export_events, parse_line
from memory_agent.types import NewEvent

pytestmark = pytest.mark.timeout(120)

T0 = 1_790_000_000.0
DIM = 32


class CountingEmbedder(HashingEmbedder):
    def __init__(self, name: str = "hashing-32") -> None:
        super().__init__(DIM, name=name)
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        return super().encode(texts)


def events(n: int) -> list[NewEvent]:
    return [
        NewEvent(
            message_id=f"m-{i}", session=f"s-{i}", from_handle="deploy" if i % 2 else "monitor",
            trace_id=f"t-{i // 3}", event="rollback" if i % 3 == 0 else "deploy",
            service=None if i % 4 == 0 else "api-gateway", occurred_at=T0 + 3600.0 * i,
            received_at=T0 + 3600.0 * i + 0.25, payload={"event": "x", "n": i, "note": "ünïcode ✓", "nested": [1, {"a": None}]},
            text=f"event {i} on api-gateway, ünïcode", sender_verified=i == 2,
        )
        for i in range(n)
    ]


async def seed(config: Config, n: int, emb: HashingEmbedder) -> list[int]:
    store = await EventStore.open(config.db_path)
    try:
        evs = events(n)
        results = await store.insert(evs, emb.encode([e.text for e in evs]), model=emb.name)
        await store.delete([results[1].id])  # ids with a gap, as after a forget
        return [r.id for r in results if r.id != results[1].id]
    finally:
        await store.close()


def export_text(config: Config, **kw: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    export_events(config.db_path, out, progress=False, **kw)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def cfg(tmp_path: Path, name: str, **index: Any) -> Config:
    return Config(data_dir=tmp_path / name, index=IndexConfig(**index))


async def test_round_trip_is_exact_and_embeds_nothing(tmp_path: Path) -> None:
    src, dst = cfg(tmp_path, "src"), cfg(tmp_path, "dst")
    emb = CountingEmbedder()
    ids = await seed(src, 9, emb)
    lines = export_text(src)
    assert [r["id"] for r in lines] == ids and set(lines[0]) == {*FIELDS, "embedding"}
    assert lines[1]["sender_verified"] is True and lines[0]["service"] is None
    assert lines[0]["payload"]["note"] == "ünïcode ✓" and lines[0]["embedding"]["model"] == "hashing-32"
    path = tmp_path / "snap.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        export_events(src.db_path, fh, progress=False)

    before = emb.encoded
    done = await import_events(dst, path, batch=3, embedder=emb, progress=False)
    assert (done.lines, done.stored, done.duplicates, done.embedded, done.skipped) == (8, 8, 0, 0, 0)
    assert emb.encoded == before  # every vector came from the file
    assert "rebuilt 8 vectors from SQLite (flat)" in done.index
    again = export_text(dst)
    strip = [{k: v for k, v in r.items() if k != "id"} for r in lines]
    assert [{k: v for k, v in r.items() if k != "id"} for r in again] == strip  # bit-exact vectors too

    # Importing the same file again stores nothing twice.
    done = await import_events(dst, path, embedder=emb, progress=False)
    assert (done.stored, done.duplicates) == (0, 8) and done.index == ""
    # The index the import built is what the daemon loads at start, without rebuilding.
    store = await EventStore.open(dst.db_path)
    try:
        index, what = await open_index(dst.index_path, store, dim=DIM, model=emb.name)
        assert what.startswith("loaded 8 vectors") and len(index) == 8, what
    finally:
        await store.close()


async def test_export_window_and_without_vectors(tmp_path: Path) -> None:
    src = cfg(tmp_path, "src")
    await seed(src, 9, HashingEmbedder(DIM, name="hashing-32"))
    lines = export_text(src, since=T0 + 3600 * 3, until=T0 + 3600 * 6, vectors=False)
    assert [r["payload"]["n"] for r in lines] == [3, 4, 5] and "embedding" not in lines[0]
    with pytest.raises(SnapshotError, match="no store"):
        export_events(tmp_path / "nope" / "memory.sqlite3", io.StringIO())


async def test_lines_without_vectors_are_embedded_and_defaults_derived(tmp_path: Path) -> None:
    dst = cfg(tmp_path, "dst")
    emb = CountingEmbedder()
    vec = HashingEmbedder(DIM).encode(["given"])[0] * 3.0  # not normalised: import normalises it
    text = "\n".join([
        json.dumps({"event": "Roll Back", "occurred_at": "2026-11-20T14:02:00+01:00",
                    "payload": {"service": "billing", "reason": "error spike", "trace_id": "t-9"}}),
        "",
        json.dumps({"event": "deploy", "occurred_at": T0, "message_id": "given",
                    "embedding": {"model": "hashing-32", "dim": DIM, "values": vec.tolist()}}),
    ]) + "\n"
    stream = io.BytesIO(text.encode())
    done = await import_events(dst, stream, embedder=emb, progress=False)
    assert (done.lines, done.stored, done.embedded) == (2, 2, 1) and emb.encoded == 1
    lines = export_text(dst)
    first, second = lines
    assert first["event"] == "roll back" and first["service"] == "billing" and first["trace_id"] == "t-9"
    assert first["message_id"].startswith("import-") and first["session"] == first["message_id"]
    assert first["from_handle"] == "import" and first["occurred_at"] == 1795179720.0  # 13:02 UTC
    assert first["text"] == "roll back. error spike. service: billing"
    stored = np.frombuffer(base64.b64decode(second["embedding"]["base64"]), dtype="<f4")
    assert np.allclose(stored, vec / np.linalg.norm(vec)) and second["payload"] == {"event": "deploy"}
    # The derived message_id is stable: the same lines again are duplicates, and nothing is re-embedded.
    done = await import_events(dst, io.BytesIO(text.encode()), embedder=emb, progress=False)
    assert (done.stored, done.duplicates, done.embedded) == (0, 2, 0) and emb.encoded == 1


async def test_bad_line_stops_before_its_batch_or_is_skipped(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    good = [json.dumps({"event": "deploy", "occurred_at": T0 + i, "message_id": f"g-{i}"}) for i in range(6)]
    lines = [*good[:4], '{"event": "deploy"}', *good[4:]]  # line 5 has no occurred_at
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")

    dst = cfg(tmp_path, "a")
    with pytest.raises(SnapshotError) as err:
        await import_events(dst, path, batch=2, embedder=emb, progress=False)
    assert err.value.line == 5
    message = str(err.value)
    assert message.startswith('line 5: "occurred_at" is missing') and "lines 5..6" in message, message
    assert "--skip-bad" in message and "the 4 events of earlier lines were" in message
    assert [r["message_id"] for r in export_text(dst)] == ["g-0", "g-1", "g-2", "g-3"]

    seen: list[int] = []
    done = await import_events(dst, path, batch=2, embedder=emb, skip_bad=True, progress=False,
                               on_bad=lambda n, _: seen.append(n))
    assert (done.stored, done.duplicates, done.skipped, seen) == (2, 4, 1, [5])
    assert done.bad == [(5, '"occurred_at" is missing: give unix seconds or an ISO-8601 time')]
    assert "1 bad lines skipped" in done.line()

    dry = cfg(tmp_path, "dry")
    done = await import_events(dry, path, embedder=emb, skip_bad=True, dry_run=True, progress=False)
    assert (done.lines, done.stored, done.skipped) == (7, 0, 1)
    assert export_text(dry) == []


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
        ('{"event": "x", "occurred_at": 1, "colour": "red"}', "unknown keys ['colour']"),
        ('{"event": "", "occurred_at": 1}', '"event" must be a non-empty string'),
        ('{"event": "x", "occurred_at": "yesterday"}', "is not an ISO-8601 time"),
        ('{"event": "x", "occurred_at": 1790000000000}', "looks like milliseconds"),
        ('{"event": "x", "occurred_at": 1, "payload": [1]}', '"payload" must be a JSON object'),
        ('{"event": "x", "occurred_at": 1, "sender_verified": "yes"}', "true or false"),
        ('{"event": "x", "occurred_at": 1, "embedding": {"model": "all-MiniLM-L6-v2", "dim": 384, "base64": ""}}',
         "made by 'all-MiniLM-L6-v2' (dim 384) but this store uses 'hashing-32' (dim 32)"),
        ('{"event": "x", "occurred_at": 1, "embedding": {"model": "hashing-32", "dim": 32, "base64": "AAAA"}}',
         "holds 3 bytes; 32 float32 are 128"),
        ('{"event": "x", "occurred_at": 1, "embedding": {"model": "hashing-32", "dim": 32, "base64": "!!"}}',
         "is not base64"),
        ('{"event": "x", "occurred_at": 1, "embedding": {"model": "hashing-32", "dim": 32, "values": [1]}}',
         "list of 32 numbers"),
        ('{"event": "x", "occurred_at": 1, "embedding": {"model": "hashing-32", "dim": 32}}', 'needs "base64"'),
    ],
)
def test_parse_line_names_the_problem(line: str, says: str) -> None:
    from datetime import UTC

    with pytest.raises(ValueError) as err:
        parse_line(line, model="hashing-32", dim=DIM, tz=UTC)
    assert says in str(err.value), str(err.value)


def test_non_finite_vectors_are_refused() -> None:
    from datetime import UTC

    bad = np.full(DIM, np.nan, dtype="<f4")
    line = json.dumps({"event": "x", "occurred_at": 1, "embedding": {
        "model": "hashing-32", "dim": DIM, "base64": base64.b64encode(bad.tobytes()).decode()}})
    with pytest.raises(ValueError, match="NaN or infinite"):
        parse_line(line, model="hashing-32", dim=DIM, tz=UTC)
    zero = json.dumps({"event": "x", "occurred_at": 1, "embedding": {"model": "hashing-32", "dim": DIM,
                                                                    "values": [0] * DIM}})
    got = parse_line(zero, model="hashing-32", dim=DIM, tz=UTC).vector
    assert got is not None and not got.any()  # a zero vector (text without words) is kept


async def test_vectors_of_another_model_or_a_foreign_store_are_refused(tmp_path: Path) -> None:
    src = cfg(tmp_path, "src")
    await seed(src, 3, HashingEmbedder(DIM, name="hashing-32"))
    path = tmp_path / "snap.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        export_events(src.db_path, fh, progress=False)
    with pytest.raises(SnapshotError, match=r"line 1: the vector was made by 'hashing-32' \(dim 32\) but this "
                                            r"store uses 'other-32' \(dim 32\); drop \"embedding\""):
        await import_events(cfg(tmp_path, "dst"), path, embedder=CountingEmbedder("other-32"), progress=False)
    with pytest.raises(SnapshotError, match=r"store holds vectors of 'hashing-32'.*memory-agent reindex"):
        await import_events(src, path, embedder=CountingEmbedder("other-32"), progress=False)


async def test_export_reads_while_the_daemon_holds_the_lock_and_import_waits(tmp_path: Path) -> None:
    src = cfg(tmp_path, "src")
    await seed(src, 3, HashingEmbedder(DIM, name="hashing-32"))
    lock = lock_data_dir(src.data_dir)
    try:
        assert len(export_text(src)) == 2
        with pytest.raises(DataDirLocked):
            await import_events(src, io.BytesIO(b""), embedder=CountingEmbedder(), progress=False)
    finally:
        lock.close()


async def test_import_builds_the_index_kind_for_its_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1400, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i, v in enumerate(vectors):
            fh.write(json.dumps({"event": "deploy", "occurred_at": T0 + i, "message_id": f"b-{i}", "embedding": {
                "model": "hashing-32", "dim": DIM, "base64": base64.b64encode(v.astype("<f4").tobytes()).decode()}}) + "\n")
    dst = cfg(tmp_path, "dst", exact_threshold=1000)
    done = await import_events(dst, path, batch=500, embedder=CountingEmbedder(), progress=False)
    assert done.stored == 1400 and "rebuilt 1400 vectors from SQLite (ivf with 32 lists)" in done.index, done.index
    assert json.loads((dst.data_dir / "index.faiss.json").read_text())["kind"] == "ivf"


def test_fields_are_every_stored_column(tmp_path: Path) -> None:
    import asyncio

    store = asyncio.run(EventStore.open(tmp_path / "m.sqlite3"))
    asyncio.run(store.close())
    conn = sqlite3.connect(tmp_path / "m.sqlite3")
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    finally:
        conn.close()
    # A new column must be exported and imported too: add it to snapshot.FIELDS and parse_line.
    assert [c for c in columns if not c.startswith("embedding")] == list(FIELDS)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_import_embeds_with_minilm_then_export_and_import_again(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"event": "rollback", "occurred_at": T0 + i, "message_id": f"c-{i}",
                                       "payload": {"reason": f"error rate spike {i}"}}) + "\n" for i in range(5)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "memory_agent", *args], capture_output=True, text=True,
                              env=env, timeout=300, check=False)

    first = cli("import", str(src), "--data-dir", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("5 lines: 5 events stored, 0 already stored, 5 embedded"), first.stdout
    out = tmp_path / "snap.jsonl"
    exported = cli("export", "--data-dir", str(tmp_path / "a"), "--output", str(out), "--since", str(T0 + 1))
    assert exported.returncode == 0 and "exported 4 events" in exported.stderr, exported.stderr
    line = json.loads(out.read_text().splitlines()[0])
    assert line["embedding"]["model"] == "all-MiniLM-L6-v2" and line["embedding"]["dim"] == 384
    second = cli("import", str(out), "--data-dir", str(tmp_path / "b"))
    assert second.returncode == 0 and "4 events stored" in second.stdout and "0 embedded" in second.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event": "x", "occurred_at": 1}\n{"event": 3}\n')
    failed = cli("import", str(bad), "--data-dir", str(tmp_path / "c"))
    assert failed.returncode == 1 and "memory-agent: line 2: \"event\" must be a non-empty string" in failed.stderr


async def test_rows_not_embedded_yet_are_exported_without_a_vector_and_skipped_by_the_index(tmp_path: Path) -> None:
    src, dst = cfg(tmp_path, "src"), cfg(tmp_path, "dst")
    emb = CountingEmbedder()
    store = await EventStore.open(src.db_path)
    try:
        evs = events(6)
        await store.insert(evs[:4], emb.encode([e.text for e in evs[:4]]), model=emb.name)
        await store.insert(evs[4:])  # acknowledged, waiting in the embedding backlog
        index, what = await open_index(src.index_path, store, dim=DIM, model=emb.name)
        assert len(index) == 4 and "rebuilt 4 vectors" in what  # the index holds what has a vector
    finally:
        await store.close()
    lines = export_text(src)
    assert ["embedding" in r for r in lines] == [True] * 4 + [False] * 2
    summary = await reindex(src, rebuild_only=True)
    assert "rebuilt 4 vectors" in summary and "2 events wait for a vector (the daemon embeds them)" in summary

    path = tmp_path / "snap.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        export_events(src.db_path, fh, progress=False)
    before = emb.encoded
    done = await import_events(dst, path, embedder=emb, progress=False)
    assert (done.stored, done.embedded) == (6, 2) and emb.encoded == before + 2  # only the two without one
    assert all("embedding" in r for r in export_text(dst))
