"""A damaged FAISS file or sidecar: the daemon starts, rebuilds the index from SQLite, says why in its log,
and serves an index that agrees with SQLite (checked by a question, and by the index it saves at exit)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from memory_agent.index.files import sidecar_path
from memory_agent.index.flat import FlatIndex
from memory_agent.index.repair import load_index
from mesh import AsyncAgent
from mesh.server import NatsServer
from tests.faults.harness import (
    MODEL_DIM,
    DaemonProcess,
    Reporters,
    ask,
    assert_index_agrees,
    read_rows,
    row_count,
    short_report,
    wait_embedded,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(300)]

SEED_REPORTS = 300
NEEDLE = {"event": "rollback", "service": "api-gateway", "trace_id": "t-needle",
          "reason": "error rate spike after the canary of v2.3.1 in eu-west-1"}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory written by the real daemon (300 reports and the needle), stopped cleanly."""
    root = tmp_path_factory.mktemp("seeded")
    server = NatsServer(store_dir=root / "nats").start()
    daemon = DaemonProcess(root / "data", server.url)
    try:
        daemon.start()

        async def seed() -> None:
            reporters = await Reporters(server.url, n=2).start()
            try:
                run = uuid.uuid4().hex[:8]
                opened = await reporters.report_many([*(short_report(i, run) for i in range(SEED_REPORTS)), NEEDLE])
                replies = await reporters.wait_replies([o.session for o in opened], timeout=120)
                assert {r["status"] for r in replies.values()} == {"stored"}
                await wait_embedded(root / "data" / "memory.sqlite3", SEED_REPORTS + 1, timeout=300)
            finally:
                await reporters.close()

        asyncio.run(seed())
        assert daemon.stop() == 0
        yield root / "data"
    finally:
        daemon.kill()
        server.stop()


def _saved_max_id(data: Path) -> int:
    try:
        return int(json.loads(sidecar_path(data / "index.faiss").read_text())["max_id"])
    except (OSError, ValueError, KeyError):
        return -1


def _index_of(data: Path) -> FlatIndex:
    return load_index(data / "index.faiss", dim=MODEL_DIM, kind="flat")


def _random_vectors(n: int, dim: int) -> np.ndarray:
    vectors = np.random.default_rng(7).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def delete_file(data: Path) -> None:
    (data / "index.faiss").unlink()


def delete_sidecar(data: Path) -> None:
    sidecar_path(data / "index.faiss").unlink()


def random_bytes(data: Path) -> None:
    path = data / "index.faiss"
    path.write_bytes(os.urandom(path.stat().st_size))


def truncate_file(data: Path) -> None:
    path = data / "index.faiss"
    os.truncate(path, path.stat().st_size // 2)


def garbage_sidecar(data: Path) -> None:
    sidecar_path(data / "index.faiss").write_text('{"count": 3, "sha256": ')


def sidecar_wrong_checksum(data: Path) -> None:
    side = sidecar_path(data / "index.faiss")
    meta = json.loads(side.read_text())
    meta["sha256"] = "0" * 64
    side.write_text(json.dumps(meta))


def not_faiss_with_matching_checksum(data: Path) -> None:
    # Whoever wrote this also fixed up the sidecar, so only FAISS itself can tell.
    import hashlib

    path = data / "index.faiss"
    junk = os.urandom(4096)
    path.write_bytes(junk)
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["sha256"] = hashlib.sha256(junk).hexdigest()
    side.write_text(json.dumps(meta))


def other_dimension(data: Path) -> None:
    ids = _index_of(data).ids()
    wrong = FlatIndex(64, model="all-MiniLM-L6-v2")
    wrong.add(ids, _random_vectors(len(ids), 64))
    wrong.save(data / "index.faiss")


def missing_ids(data: Path) -> None:
    # A valid index saved earlier (the last reports are not in it), as after a crash between saves.
    index = _index_of(data)
    index.remove(np.sort(index.ids())[-25:])
    index.save(data / "index.faiss")


def extra_ids(data: Path) -> None:
    # A valid index holding ids SQLite does not have, as when SQLite lost its last transactions.
    index = _index_of(data)
    start = int(index.ids().max()) + 1
    index.add(np.arange(start, start + 10, dtype=np.int64), _random_vectors(10, MODEL_DIM))
    index.save(data / "index.faiss")


def same_ids_other_vectors(data: Path) -> None:
    # A valid index, consistent sidecar, the very ids SQLite has, but other vectors (an index file
    # restored from another store of the same size).
    ids = _index_of(data).ids()
    wrong = FlatIndex(MODEL_DIM, model="all-MiniLM-L6-v2")
    wrong.add(ids, _random_vectors(len(ids), MODEL_DIM))
    wrong.save(data / "index.faiss")


DAMAGES: list[tuple[Callable[[Path], None], str]] = [
    (delete_file, r"index file missing"),
    (delete_sidecar, r"sidecar .* is missing"),
    (random_bytes, r"checksum"),
    (truncate_file, r"checksum"),
    (garbage_sidecar, r"sidecar .* unreadable"),
    (sidecar_wrong_checksum, r"checksum"),
    (not_faiss_with_matching_checksum, r"not a FAISS index"),
    (other_dimension, r"dimension 64"),
    (missing_ids, r"stale .*file has \d+ vectors"),
    (extra_ids, r"stale .*file has \d+ vectors"),
    (same_ids_other_vectors, r"vectors differ|do not match|mismatch"),
]


@pytest.mark.parametrize(("damage", "says"), DAMAGES, ids=[d.__name__ for d, _ in DAMAGES])
async def test_damaged_index_is_rebuilt_from_sqlite_and_the_log_says_why(
    seeded: Path, tmp_path: Path, nats_server: NatsServer, damage: Callable[[Path], None], says: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    damage(data)
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    asker = AsyncAgent(f"asker-{uuid.uuid4().hex[:6]}", servers=nats_server.url)
    try:
        line = daemon.wait_for_log(r"memory_agent\.\w+: (.*rebuilt (\d+) vectors from SQLite.*)", 1)
        assert re.search(says, line.group(1)), line.group(1)
        assert int(line.group(2)) == SEED_REPORTS + 1
        await asker.start()
        await asker.register()
        stats = await ask(asker, {"op": "stats"})
        assert stats["events"] == stats["index"]["size"] == SEED_REPORTS + 1
        answer = await ask(asker, {"query": "error rate spike after a canary in eu-west-1", "limit": 3})
        assert answer["events"][0]["trace_id"] == "t-needle"
        assert daemon.stop() == 0  # saves the index it served
    finally:
        await asker.close()
        daemon.kill()
    assert_index_agrees(data, read_rows(data / "memory.sqlite3"))
    print(f"\n{damage.__name__}: {line.group(1)}")


async def test_intact_index_is_loaded_not_rebuilt(seeded: Path, tmp_path: Path, nats_server: NatsServer) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    try:
        daemon.wait_for_log(rf"loaded {SEED_REPORTS + 1} vectors", 1)
        assert "rebuilt" not in daemon.log()
        assert daemon.stop() == 0
    finally:
        daemon.kill()


async def test_truncated_wal_after_sigkill_the_index_follows_sqlite(
    seeded: Path, tmp_path: Path, nats_server: NatsServer
) -> None:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    env = {"MEMORY_AGENT_INDEX_SAVE_INTERVAL": "0.5"}  # the index file gets ahead of what SQLite keeps
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url, env=env).start)
    reporters = await Reporters(nats_server.url, n=2).start()
    run = uuid.uuid4().hex[:8]
    more = 200
    try:
        opened = await reporters.report_many([short_report(i, run) for i in range(more)])
        replies = await reporters.wait_replies([o.session for o in opened], timeout=120)
        assert {r["status"] for r in replies.values()} == {"stored"}  # acknowledged: committed in the WAL
        # Wait for a periodic save to write the index with every row, then crash.
        deadline = time.monotonic() + 30
        while _saved_max_id(data) != SEED_REPORTS + 1 + more:
            assert time.monotonic() < deadline, "the index was not saved with the new rows"
            await asyncio.sleep(0.1)
        daemon.kill()
    finally:
        await reporters.close()
        daemon.kill()
    wal = data / "memory.sqlite3-wal"
    wal_bytes = wal.stat().st_size
    assert wal_bytes > 0, "no WAL after the kill"
    os.truncate(wal, wal_bytes // 2)

    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    asker = AsyncAgent(f"asker-{uuid.uuid4().hex[:6]}", servers=nats_server.url)
    try:
        line = daemon.wait_for_log(r"memory_agent\.\w+: (index stale .*rebuilt (\d+) vectors from SQLite.*)", 1)
        vectors_kept = int(line.group(2))
        kept = row_count(data / "memory.sqlite3")  # rows can survive without the vector written after them
        assert SEED_REPORTS + 1 <= vectors_kept <= kept <= SEED_REPORTS + 1 + more
        assert vectors_kept < SEED_REPORTS + 1 + more  # the index file was ahead of SQLite, and was not served
        await wait_embedded(data / "memory.sqlite3", kept, timeout=120)  # the backlog gives the rest theirs
        await asker.start()
        await asker.register()
        stats = await ask(asker, {"op": "stats"})
        assert stats["events"] == stats["index"]["size"] == kept
        answer = await ask(asker, {"query": "error rate spike after a canary in eu-west-1", "limit": 3})
        assert answer["events"][0]["trace_id"] == "t-needle"
        assert daemon.stop() == 0
    finally:
        await asker.close()
        daemon.kill()
    rows = read_rows(data / "memory.sqlite3")
    assert_index_agrees(data, rows)
    # What survived is intact: each kept report once, as it was sent.
    survived = [p for p in rows.payloads if p.get("run") == run]
    assert len(survived) == kept - SEED_REPORTS - 1
    assert len({p["seq"] for p in survived}) == len(survived)
    assert all(p == short_report(p["seq"], run) for p in survived)
    print(f"\ntruncated WAL ({wal_bytes} -> {wal_bytes // 2} bytes): SQLite kept {kept - SEED_REPORTS - 1} of "
          f"{more} acknowledged reports ({vectors_kept - SEED_REPORTS - 1} with their vector); {line.group(1)}")
