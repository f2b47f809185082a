"""retention_days on the real daemon: expired events leave SQLite, FTS5 and FAISS on a schedule, and reports
keep being stored while a long sweep runs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.store.events import EventStore
from memory_agent.types import NewEvent
from mesh import AsyncAgent
from tests.conftest import NOW, DaemonFactory

AgentFactory = Callable[..., Awaitable[AsyncAgent]]
DAY = 86_400.0


async def seed_store(db: Path, ages_days: list[float], *, word: str = "expired") -> list[int]:
    """Store one event per age (days before NOW) directly in SQLite, as a previous run would have."""
    embedder = HashingEmbedder(dim=64, name="hashing-64")
    events = [NewEvent(message_id=str(uuid.uuid4()), session="s", from_handle="deploy", trace_id=f"t-{i}",
                       event="deploy", service="billing", occurred_at=NOW - age * DAY, received_at=NOW - age * DAY,
                       payload={"event": "deploy", "note": word}, text=f"deploy. {word} {i}")
              for i, age in enumerate(ages_days)]
    ids: list[int] = []
    async with await EventStore.open(db) as store:
        for start in range(0, len(events), 2000):
            part = events[start : start + 2000]
            vectors = embedder.encode([e.text for e in part[:1]]).repeat(len(part), axis=0)
            ids += [r.id for r in await store.insert(part, vectors, model="hashing-64")]
    return ids


def count_rows(db: Path, where: str = "1") -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM events WHERE {where}").fetchone()[0])
    finally:
        conn.close()


async def report(agent: AsyncAgent, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps(payload), content_type="application/json", timeout=30)
    return dict(json.loads(reply.payload))


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_expired_events_are_removed_on_a_schedule(
    nats_url: str, tmp_path: Path, make_daemon: DaemonFactory, mesh_agent: AgentFactory
) -> None:
    db = tmp_path / "data" / "memory.sqlite3"
    old = await seed_store(db, [10.0, 8.0, 1.0])
    daemon = await make_daemon(nats_url, retention_days=7, retention_interval=0.2)
    assert (await daemon.stats())["retention_days"] == 7
    await wait_for(lambda: count_rows(db) == 1)  # the first sweep runs at start
    assert [e.id for e in await daemon.store.get(old)] == [old[2]]

    deploy = await mesh_agent("deploy")
    late = await report(deploy, {"event": "rollback", "occurred_at": "2026-10-01T00:00:00Z"})  # 51 days ago
    fresh = await report(deploy, {"event": "rollback", "occurred_at": "2026-11-21T09:00:00Z"})
    assert late["status"] == fresh["status"] == "stored"
    await wait_for(lambda: count_rows(db, f"id = {late['id']}") == 0)  # taken by a later sweep
    assert [e.id for e in await daemon.store.get([old[2], late["id"], fresh["id"]])] == [old[2], fresh["id"]]
    conn = sqlite3.connect(db)
    try:  # the FTS5 rows went with them
        assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'expired'").fetchone()[0] == 1
    finally:
        conn.close()
    await daemon.wait_embedded(timeout=30)
    assert (await daemon.stats())["index"]["size"] == 2


async def test_reports_are_stored_while_a_long_sweep_runs(
    nats_url: str, tmp_path: Path, make_daemon: DaemonFactory, mesh_agent: AgentFactory
) -> None:
    db = tmp_path / "data" / "memory.sqlite3"
    await seed_store(db, list(np.linspace(40, 400, 10_000)))
    deploy = await mesh_agent("deploy")
    daemon = await make_daemon(nats_url, retention_days=30, retention_batch=25)
    remaining = []
    for i in range(5):  # reports sent while the sweep deletes 25 events per transaction
        stored = await report(deploy, {"event": "rollback", "service": f"svc-{i}"})
        assert stored["status"] == "stored"
        remaining.append(count_rows(db, "event = 'deploy'"))
    assert remaining[-1] > 0, "the sweep ended before the reports were answered: it did not overlap ingest"
    await wait_for(lambda: count_rows(db, "event = 'deploy'") == 0, timeout=120)
    assert count_rows(db) == 5
    await daemon.wait_embedded(timeout=30)
    assert (await daemon.stats())["index"]["size"] == 5
