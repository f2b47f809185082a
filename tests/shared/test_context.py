"""meshflow's working memory through the real daemon: record_outcome into the ledger and its per-node
aggregate, recent reports, a prompt-ready context within its budget; and the blocking twin of the client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from memory_agent.errors import ReportError
from memory_agent.shared.wire import ChangeEvent
from memory_agent.sync import SyncMemoryClient
from mesh import Message, SyncAgent
from tests.shared.conftest import ClientFactory, eventually

pytestmark = pytest.mark.timeout(60)


async def test_outcomes_are_aggregated_per_node(memory: Any, client: ClientFactory) -> None:
    c = await client("planner")
    start = time.time()
    await c.record_outcome("plan", True, confidence=0.9, verifier_score=0.8, trace_id="t-1")
    await c.record_outcome("plan", False, confidence=0.5)
    await c.record_outcome("plan", True, confidence=0.7, verifier_score=0.6, attempt=3)
    await c.record_outcome("execute", False, verifier_score=0.1)
    await c.report({"event": "outcome", "node_id": "plan", "success": "maybe"})  # counted, not judged
    await c.report({"event": "outcome", "success": True})  # no node: not in the ledger
    nodes = {n["node_id"]: n for n in await c.outcomes()}
    plan = nodes["plan"]
    assert (plan["count"], plan["successes"], plan["judged"]) == (4, 2, 3)
    assert plan["success_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert plan["mean_confidence"] == pytest.approx(0.7) and plan["mean_verifier_score"] == pytest.approx(0.7)
    assert nodes["execute"]["success_rate"] == 0 and nodes["execute"]["mean_confidence"] is None
    assert [n["node_id"] for n in await c.outcomes("execute")] == ["execute"]
    assert await c.outcomes(since=start + 3600) == []
    assert len(await c.outcomes(since=start - 5)) == 2
    for bad in ({"node_id": "", "success": True}, {"node_id": "x", "success": 1},
                {"node_id": "x", "success": True, "confidence": float("nan")}):
        with pytest.raises(ReportError):
            await c.record_outcome(**bad)  # type: ignore[arg-type]
    recorded = [e["payload"] for e in await c.recent(5)]
    assert {"event": "outcome", "node_id": "plan", "success": True, "confidence": 0.7, "verifier_score": 0.6,
            "attempt": 3} in recorded  # details travel with the outcome


async def test_recent_and_a_context_string_bounded_by_max_chars(memory: Any, client: ClientFactory) -> None:
    deploy = await client("deploy")
    monitor = await client("monitor")
    await monitor.report({"event": "anomaly", "service": "api", "summary": "5xx rate jumped to 12%"}, trace_id="t-81")
    await deploy.report({"event": "rollback", "service": "api", "reason": "error rate spike"}, trace_id="t-81")
    await deploy.report({"event": "deploy", "service": "billing", "version": "v9"}, trace_id="t-90")
    latest = await deploy.recent(2)
    assert [e["event"] for e in latest] == ["deploy", "rollback"]
    assert [e["event"] for e in await deploy.recent(10, handle="monitor")] == ["anomaly"]
    assert [e["event"] for e in await deploy.recent(10, trace_id="t-81")] == ["rollback", "anomaly"]

    full = await deploy.context_string(5000, query="pool error rate", n=2)
    lines = full.splitlines()
    assert lines[0] == "Latest reports:" and "@deploy (trace t-90): deploy. service: billing" in lines[1]
    assert any(line.startswith("Reports relevant to 'pool error rate'") for line in lines)
    assert "5xx rate jumped to 12%" in full  # relevant, not among the 2 latest
    assert full.count("error rate spike") == 1  # among both, listed once
    for budget in (30, 120, 250):
        short = await deploy.context_string(budget, query="pool error rate", n=2)
        assert len(short) <= budget and full.startswith(short)
    with pytest.raises(Exception, match="max_chars"):
        await deploy.context_string(0)


async def test_the_sync_client_wraps_the_async_one(memory: Any, nats_url: str) -> None:
    await asyncio.to_thread(_sync_client_session, nats_url)  # the daemon's loop keeps running meanwhile


def _sync_client_session(nats_url: str) -> None:
    seen: list[ChangeEvent] = []
    with SyncMemoryClient(nats_url, client_handle="script", workflow_id="t-sync", timeout=10) as memory_client:
        @memory_client.on_change("step.*")
        def changed(event: ChangeEvent) -> None:  # runs on a worker thread
            seen.append(event)
            if event.key == "step.1":
                memory_client.set("step.echo", event.data)  # blocking calls work from there

        time.sleep(0.3)
        assert memory_client.set("step.1", {"ok": True}) > 0
        assert memory_client.get("step.1") == {"ok": True}
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.key for e in seen] == ["step.1", "step.echo"]
        assert memory_client.workflow("t-sync").list_keys() == ["step.1", "step.echo"]
        assert memory_client.actor().set("x", 1) and memory_client.actor("script").get("x") == 1
        assert [h.key for h in memory_client.similarity_search([1.0, 0.0], namespace="none")] == []
    with pytest.raises(Exception, match="closed"):
        memory_client.get("step.1")


async def test_a_sync_agent_handler_writes_its_workflow_without_passing_it(memory: Any, nats_url: str) -> None:
    await asyncio.to_thread(_sync_agent_session, nats_url)


def _sync_agent_session(nats_url: str) -> None:
    done: list[str] = []
    with SyncAgent("worker", servers=nats_url) as agent:
        memory_client = SyncMemoryClient(agent=agent, timeout=10)

        @agent.on_message
        def handle(msg: Message) -> None:  # a plain handler, on a worker thread
            if msg.message_type == "session_open":
                memory_client.set("result", {"for": msg.payload})
                done.append(msg.trace_id)

        agent.register()
        memory_client.start()
        with SyncAgent("boss", servers=nats_url) as boss:
            boss.register()
            boss.open_session("worker", "compile report", trace_id="t-sync-chain")
            deadline = time.monotonic() + 10
            while not done and time.monotonic() < deadline:
                time.sleep(0.05)
            assert done == ["t-sync-chain"]
            assert memory_client.workflow("t-sync-chain").get("result") == {"for": "compile report"}
        memory_client.close()


async def test_on_change_listeners_start_with_the_client(memory: Any, nats_url: str, client: ClientFactory) -> None:
    from memory_agent.client import MemoryClient

    late = MemoryClient(nats_url, client_handle="late-starter", workflow_id="t-start", timeout=10)
    got: list[str] = []

    @late.on_change("k")
    async def record(event: ChangeEvent) -> None:
        got.append(event.action)

    async with late:
        await asyncio.sleep(0.3)
        await late.set("k", 1)
        await late.delete("k")
        await eventually(lambda: got == ["set", "delete"])
