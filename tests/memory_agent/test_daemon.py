"""The daemon end to end on a real nats-server, real SQLite and FAISS (small deterministic embedder)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesh import AsyncAgent, Message
from tests.conftest import NOW, CountingEmbedder

FRI = "2026-11-20"
REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("monitor", {"event": "anomaly", "service": "api-gateway", "summary": "5xx rate jumped to 12%",
                 "trace_id": "t-81", "occurred_at": f"{FRI}T14:00:00Z"}),
    ("deploy", {"event": "rollback", "service": "api-gateway", "from_version": "v2.4.1", "to_version": "v2.3.9",
                "reason": "error rate spike after deploy", "environment": "production",
                "trace_id": "t-81", "occurred_at": f"{FRI}T14:05:00Z"}),
    ("triage", {"event": "root_cause", "service": "api-gateway", "trace_id": "t-81",
                "cause": "connection pool lowered from 50 to 5 in v2.4.1", "occurred_at": f"{FRI}T14:30:00Z"}),
    ("deploy", {"event": "rollback", "service": "billing", "reason": "failed schema migration",
                "environment": "production", "trace_id": "t-50", "occurred_at": "2026-11-10T09:00:00Z"}),
    ("test-runner", {"event": "flaky_test", "test": "test_login_redirect", "reason": "fails 3 of 10 runs",
                     "trace_id": "ci-7", "occurred_at": "2026-11-19T08:00:00Z"}),
    ("test-runner", {"event": "test_quarantined", "test": "test_login_redirect", "trace_id": "ci-7",
                     "occurred_at": "2026-11-19T08:01:00Z"}),
]


async def report(agent: AsyncAgent, payload: Any, *, content_type: str = "application/json",
                 trace_id: str | None = None) -> dict[str, Any]:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    reply = await agent.request("memory", body, content_type=content_type, trace_id=trace_id, timeout=30)
    assert reply.message_type == "session_resolve"
    return dict(json.loads(reply.payload))


async def ask(agent: AsyncAgent, query: str, **extra: Any) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps({"query": query, **extra}),
                                content_type="application/json", timeout=30)
    return dict(json.loads(reply.payload))


@pytest.fixture
async def seeded(start_daemon, mesh_agent):  # type: ignore[no-untyped-def]
    """A daemon holding REPORTS, and a registered agent per reporting handle plus an asker."""
    daemon = await start_daemon()
    agents = {h: await mesh_agent(h) for h in {h for h, _ in REPORTS}}
    ids = []
    for handle, payload in REPORTS:
        reply = await report(agents[handle], payload)
        assert reply["status"] == "stored" and reply["duplicate"] is False
        ids.append(reply["id"])
    await daemon.wait_embedded(timeout=30)
    return daemon, await mesh_agent("asker"), ids


async def test_report_is_stored_and_answered(seeded) -> None:  # type: ignore[no-untyped-def]
    _daemon, asker, ids = seeded
    assert len(set(ids)) == len(REPORTS)
    reply = await asker.request("memory", "What rollbacks happened in the last 7 days?", timeout=30)
    text = reply.payload
    assert reply.content_type == "text/plain"
    assert f"[#{ids[1]}]" in text and "@deploy reported rollback" in text and "trace t-81" in text
    assert f"[#{ids[3]}]" not in text  # 11 days ago: outside the window
    assert "Fri 2026-11-20 14:05" in text


async def test_structured_answer_shape_and_window(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, ids = seeded
    answer = await ask(asker, "What rollbacks happened in the last 7 days?")
    assert [e["id"] for e in answer["events"]] == [ids[1]]
    event = answer["events"][0]
    assert set(event) == {"id", "message_id", "trace_id", "from_handle", "sender_verified", "event", "occurred_at",
                          "payload", "score"}
    assert event["payload"] == REPORTS[1][1]
    assert event["occurred_at"] == "2026-11-20T14:05:00Z"
    assert event["from_handle"] == "deploy" and event["trace_id"] == "t-81"
    assert answer["window"] == {"since": "2026-11-14T10:00:00Z", "until": None}  # rolling: open-ended


async def test_list_returns_every_match_not_a_sample(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, ids = seeded
    answer = await ask(asker, "What rollbacks happened in November?")
    assert sorted(e["id"] for e in answer["events"]) == sorted([ids[1], ids[3]])
    answer = await ask(asker, "Which tests were quarantined this week?")
    assert [e["id"] for e in answer["events"]] == [ids[5]]


async def test_how_many_counts(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, _ = seeded
    answer = await ask(asker, "How many rollbacks happened this month?")
    assert answer["answer"].startswith("2 events")
    answer = await ask(asker, "How many flaky tests did we see yesterday?")
    assert answer["answer"].startswith("0 events")


async def test_timeline_of_a_trace_in_time_order(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, ids = seeded
    answer = await ask(asker, "Give me the timeline of trace t-81")
    assert [e["id"] for e in answer["events"]] == ids[:3]
    assert answer["answer"].startswith("Timeline of trace t-81: 3 events")


async def test_why_gives_the_match_and_its_trace(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, ids = seeded
    answer = await ask(asker, "Why did production roll back on Friday?")
    assert answer["events"][0]["id"] == ids[1]
    assert {e["id"] for e in answer["events"][1:]} == {ids[0], ids[2]}
    assert "connection pool lowered" in answer["answer"]


async def test_structured_filters_and_since_until(seeded) -> None:  # type: ignore[no-untyped-def]
    _, asker, ids = seeded
    answer = await ask(asker, "What happened?", filters={"from_handle": "deploy"},
                       since="2026-11-01T00:00:00Z", until="2026-11-15T00:00:00Z")
    assert [e["id"] for e in answer["events"]] == [ids[3]]
    assert answer["window"] == {"since": "2026-11-01T00:00:00Z", "until": "2026-11-15T00:00:00Z"}


async def test_redelivered_report_is_stored_once(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    deploy = await mesh_agent("deploy")
    first = await report(deploy, REPORTS[1][1])
    [stored] = await daemon.store.get([first["id"]])
    # JetStream redelivers a message whose ack was lost: the same message, the same session.
    again = Message(session=stored.session, from_handle="deploy", to_handle="memory",
                    payload=json.dumps(REPORTS[1][1]), content_type="application/json",
                    message_type="session_open", trace_id="t-81", message_id=stored.message_id,
                    sent_at=NOW, sequence=1)
    reply = await daemon.handlers.handle(again)
    assert reply is not None and json.loads(reply.payload) == {"status": "stored", "id": first["id"], "duplicate": True}
    stats = await daemon.stats()
    assert stats["events"] == 1
    assert stats["ingest"] == {"stored": 1, "duplicates": 1, "batches": 2, "refused": 0, "queued": 0,
                               "queue_capacity": 1024}


async def test_two_agents_may_choose_the_same_message_id(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    """The SDK asks a message id to be unique among the sender's own messages (docs/mesh.md): two agents that
    both send "daily-1" send two reports, and each one's retry with it is a duplicate of its own."""
    daemon = await start_daemon()
    replies = {}
    for handle, payload in (("deploy", REPORTS[1][1]), ("canary", {**REPORTS[1][1], "summary": "canary rolled back"})):
        agent = await mesh_agent(handle)
        reply = await agent.request("memory", json.dumps(payload), content_type="application/json",
                                    message_id="daily-1", timeout=30)
        replies[handle] = json.loads(reply.payload)
    assert replies["deploy"]["status"] == replies["canary"]["status"] == "stored"
    assert replies["deploy"]["id"] != replies["canary"]["id"] and replies["canary"]["duplicate"] is False
    stored = await daemon.store.get([replies["deploy"]["id"], replies["canary"]["id"]])
    assert [(e.from_handle, e.message_id) for e in stored] == [("deploy", "daily-1"), ("canary", "daily-1")]
    [canary] = await daemon.store.get([replies["canary"]["id"]])
    again = Message(session=canary.session, from_handle="canary", to_handle="memory", payload=json.dumps(canary.payload),
                    content_type="application/json", message_type="session_open", trace_id=canary.trace_id,
                    message_id="daily-1", sent_at=NOW, sequence=1)
    reply = await daemon.handlers.handle(again)
    assert reply is not None and json.loads(reply.payload) == {"status": "stored", "id": canary.id, "duplicate": True}
    assert (await daemon.stats())["events"] == 2


async def test_restart_keeps_everything_without_re_embedding(seeded, start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, asker, ids = seeded
    await daemon.close()
    embedder = CountingEmbedder()
    again = await start_daemon(embedder=embedder)
    assert again.index_report.startswith(f"loaded {len(REPORTS)} vectors")
    assert embedder.encoded == 0
    answer = await ask(asker, "Give me the timeline of trace t-81")
    assert [e["id"] for e in answer["events"]] == ids[:3]
    answer = await ask(asker, "connection pool")
    assert answer["events"][0]["id"] == ids[2]
    assert embedder.encoded == 1  # only the question


async def test_faiss_rebuilt_from_sqlite_when_its_file_is_deleted(seeded, start_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon, asker, ids = seeded
    await daemon.close()
    daemon.config.index_path.unlink()
    embedder = CountingEmbedder()
    again = await start_daemon(embedder=embedder)
    assert again.index_report.startswith("index file missing: rebuilt 6 vectors from SQLite")
    assert embedder.encoded == 0
    assert (await again.stats())["index"]["size"] == len(REPORTS)
    answer = await ask(asker, "failed schema migration")
    assert answer["events"][0]["id"] == ids[3]


async def test_stats_operation(seeded) -> None:  # type: ignore[no-untyped-def]
    daemon, asker, _ = seeded
    reply = await asker.request("memory", json.dumps({"op": "stats"}), content_type="application/json", timeout=30)
    stats = json.loads(reply.payload)
    assert stats["events"] == len(REPORTS)
    assert stats["index"] == {"size": len(REPORTS), "type": "flat", "path": str(daemon.config.index_path)}
    assert stats["model"] == "hashing-64"
    assert stats["uptime_s"] == 0.0  # the test clock does not move
    assert stats["health"] == {"status": "ok", "ready": True, "storage": "ok", "embedding": "ok", "backlog": 0,
                               "backlog_age_s": None, "ingest_queue": 0, "reasons": []}
    assert daemon.health().to_json() == stats["health"]  # what a readiness probe reads, without a round trip
    assert stats["embedding"]["status"] == "ok" and stats["storage"]["down_since_s"] is None


async def test_reports_in_flight_are_committed_then_embedded_in_batches(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    daemon = await start_daemon()
    agent = await mesh_agent("loader")
    n = 200
    replies = await asyncio.gather(*(report(agent, {"event": "tick", "n": i}) for i in range(n)))
    assert all(r["status"] == "stored" and not r["duplicate"] for r in replies)
    assert len({r["id"] for r in replies}) == n
    stats = await daemon.stats()
    assert stats["events"] == n
    assert stats["ingest"]["batches"] < n / 2  # many reports per transaction
    await daemon.wait_embedded(timeout=30)
    stats = await daemon.stats()
    assert stats["index"]["size"] == n and stats["embedding"]["backlog"] == 0
    assert stats["embedder"]["batches"] < n / 2  # many texts per encode call



async def test_a_report_dated_ahead_of_its_receipt_is_kept_out_of_windows_that_reach_now(seeded, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    """Issue 14 item 7: a sender's clock a year fast does not put its report into "the last 7 days"; the
    report is stored with its claimed time and found by its trace and by a window that names that time."""
    _daemon, asker, ids = seeded
    deploy = await mesh_agent("deploy-fast-clock")
    ahead = await report(deploy, {"event": "rollback", "service": "search", "trace_id": "t-ahead",
                                  "occurred_at": "2027-11-21T10:00:00Z"})
    assert ahead["status"] == "stored"
    listing = await ask(asker, "What rollbacks happened in the last 7 days?")
    assert [e["id"] for e in listing["events"]] == [ids[1]]
    count = await ask(asker, "How many rollbacks this week?")
    assert count["total"] == 1
    timeline = await ask(asker, "Give me the timeline of trace t-ahead")
    assert [e["id"] for e in timeline["events"]] == [ahead["id"]]
    named = await ask(asker, "What rollbacks happened?", since="2027-11-20T00:00:00Z", until="2027-11-22T00:00:00Z")
    assert [e["id"] for e in named["events"]] == [ahead["id"]]
