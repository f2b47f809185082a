"""{"op": "forget", ...} against the real daemon over the mesh: admins only; the events leave SQLite, the
FTS5 index and FAISS (in memory and in the saved file), and answers stop citing them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from memory_agent.daemon import MemoryDaemon
from memory_agent.index.repair import load_index
from mesh import AsyncAgent
from tests.conftest import DaemonFactory

AgentFactory = Callable[..., Awaitable[AsyncAgent]]

REPORTS: list[dict[str, Any]] = [
    {"event": "rollback", "service": "api-gateway", "reason": "zebrafish outage", "trace_id": "t-81",
     "occurred_at": "2026-11-20T14:05:00Z"},
    {"event": "root_cause", "service": "api-gateway", "cause": "zebrafish pool", "trace_id": "t-81",
     "occurred_at": "2026-11-20T14:30:00Z"},
    {"event": "rollback", "service": "billing", "reason": "failed migration", "trace_id": "t-50",
     "occurred_at": "2026-11-10T09:00:00Z"},
    {"event": "deploy", "service": "billing", "reason": "old release", "trace_id": "t-9",
     "occurred_at": "2026-10-01T09:00:00Z"},
]


async def send(agent: AsyncAgent, payload: dict[str, Any]) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps(payload), content_type="application/json", timeout=30)
    return dict(json.loads(reply.payload))


def fts_rows(db: Path, word: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH ?", (word,))]
    finally:
        conn.close()


async def seed(make_daemon: DaemonFactory, mesh_agent: AgentFactory, nats_url: str,
               **config: Any) -> tuple[MemoryDaemon, AsyncAgent, list[int]]:
    daemon = await make_daemon(nats_url, **config)
    deploy = await mesh_agent("deploy")
    ids = []
    for payload in REPORTS:
        stored = await send(deploy, payload)
        assert stored["status"] == "stored"
        ids.append(stored["id"])
    await daemon.wait_embedded(timeout=30)  # stored first, embedded behind: forget must reach FAISS too
    return daemon, deploy, ids


async def test_forget_removes_events_from_sqlite_fts_and_faiss(
    nats_url: str, make_daemon: DaemonFactory, mesh_agent: AgentFactory
) -> None:
    daemon, _, ids = await seed(make_daemon, mesh_agent, nats_url, security={"admins": ["ops"]})
    ops = await mesh_agent("ops")
    db, index_file = daemon.config.db_path, daemon.config.index_path
    assert sorted(fts_rows(db, "zebrafish")) == ids[:2]

    assert await send(ops, {"op": "forget", "trace_id": "t-81"}) == {"status": "forgotten", "count": 2}
    assert [e.id for e in await daemon.store.get(ids)] == ids[2:]
    assert fts_rows(db, "zebrafish") == []
    assert set(load_index(index_file, dim=64, kind="flat").ids().tolist()) == set(ids[2:])  # saved at once
    assert (await daemon.stats())["index"]["size"] == 2
    timeline = await send(ops, {"query": "Give me the timeline of trace t-81"})
    assert timeline["events"] == [] and "#" + str(ids[0]) not in timeline["answer"]

    assert await send(ops, {"op": "forget", "id": ids[2]}) == {"status": "forgotten", "count": 1}
    assert await send(ops, {"op": "forget", "id": ids[2]}) == {"status": "forgotten", "count": 0}
    # "before" is read in the configured time zone when it has no offset; only the October event is older.
    assert await send(ops, {"op": "forget", "before": "2026-11-01"}) == {"status": "forgotten", "count": 1}
    assert (await daemon.stats())["events"] == 0
    assert load_index(index_file, dim=64, kind="flat").ids().tolist() == []


async def test_only_listed_admins_may_forget(nats_url: str, make_daemon: DaemonFactory, mesh_agent: AgentFactory) -> None:
    daemon, deploy, ids = await seed(make_daemon, mesh_agent, nats_url, security={"admins": ["ops"]})
    refused = await send(deploy, {"op": "forget", "trace_id": "t-81"})
    assert refused["status"] == "error"
    assert "@deploy may not forget" in refused["error"] and "security.admins" in refused["error"]
    assert len(await daemon.store.get(ids)) == len(ids)


async def test_with_no_admins_nobody_may_forget(nats_url: str, make_daemon: DaemonFactory,
                                               mesh_agent: AgentFactory) -> None:
    daemon, _, ids = await seed(make_daemon, mesh_agent, nats_url)
    ops = await mesh_agent("ops")
    assert (await send(ops, {"op": "forget", "id": ids[0]}))["status"] == "error"
    assert len(await daemon.store.get(ids)) == len(ids)


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        ({"op": "forget"}, "forget got no selector"),
        ({"op": "forget", "trace_id": "t-81", "id": 1}, "trace_id and id together"),
        ({"op": "forget", "service": "billing"}, "forget does not take service"),
        ({"op": "forget", "id": "12"}, 'forget "id" must be a positive whole number'),
        ({"op": "forget", "id": 0}, 'forget "id" must be a positive whole number'),
        ({"op": "forget", "trace_id": " "}, 'forget "trace_id" must be a non-empty string'),
        ({"op": "forget", "before": "last tuesday"}, '"before" \'last tuesday\' is not an ISO-8601 time'),
    ],
)
async def test_bad_forget_requests_get_an_error_and_delete_nothing(
    nats_url: str, make_daemon: DaemonFactory, mesh_agent: AgentFactory, request_: dict[str, Any], says: str
) -> None:
    daemon, _, ids = await seed(make_daemon, mesh_agent, nats_url, security={"admins": ["ops"]})
    ops = await mesh_agent("ops")
    reply = await send(ops, request_)
    assert reply["status"] == "error" and says in reply["error"]
    assert len(await daemon.store.get(ids)) == len(ids)
