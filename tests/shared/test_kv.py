"""Scoped state through the real daemon on a real nats-server: the workflow follows the session chain,
hierarchical get, compare-and-set, TTL expiry events, AgentField's change patterns and replay."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from memory_agent.client import MemoryClient
from memory_agent.errors import (
    SharedAccessDenied,
    SharedMemoryError,
    SharedMemoryUnavailable,
    VersionConflict,
)
from memory_agent.shared.constants import CHANGES_STREAM
from memory_agent.shared.wire import ChangeEvent
from mesh import AsyncAgent, Message
from mesh.access import jetstream
from tests.conftest import DaemonFactory
from tests.shared.conftest import ClientFactory, eventually

pytestmark = pytest.mark.timeout(60)


async def test_two_agents_share_workflow_state_through_the_trace_of_one_session_chain(
    memory: Any, client: ClientFactory, mesh_agent: Any
) -> None:
    intake = await client("intake")
    triage = await client("triage")
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    @intake.agent.on_message
    async def take(msg: Message) -> None:
        if msg.message_type != "session_open":
            return
        await intake.set("ticket", {"id": 7, "text": msg.payload, "status": "new"})  # no scope, no trace passed
        await intake.agent.open_session("triage", "please triage ticket 7", trace_id=msg.trace_id)

    @triage.agent.on_message
    async def decide(msg: Message) -> None:
        if msg.message_type != "session_open":
            return
        ticket = await triage.get("ticket")
        seen["ticket"] = ticket
        await triage.set("ticket", {**ticket, "status": "triaged", "owner": "network-team"})
        seen["keys"] = await triage.list_keys()
        done.set()

    customer = await mesh_agent("customer")
    await customer.open_session("intake", "VPN drops every hour", trace_id="t-ticket-7")
    await asyncio.wait_for(done.wait(), 20)
    assert seen["ticket"] == {"id": 7, "text": "VPN drops every hour", "status": "new"}
    assert seen["keys"] == ["ticket"]
    # Both wrote the workflow of that trace, and nothing else.
    entry = await intake.workflow("t-ticket-7").get_entry("ticket")
    assert entry is not None and entry.value["status"] == "triaged" and entry.updated_by == "triage"
    assert entry.version > 1 and entry.scope == "workflow" and entry.scope_id == "t-ticket-7"
    changes = await intake.workflow("t-ticket-7").history("ticket")
    assert [(c.by, c.data["status"], (c.previous_data or {}).get("status")) for c in changes] == [
        ("triage", "triaged", "new"), ("intake", "new", None)]
    # Outside a handler there is no workflow: the error says what to do instead.
    with pytest.raises(SharedMemoryError, match="not inside an on_message handler"):
        await intake.set("ticket", {})


@pytest.mark.parametrize("direct_reads", [True, False], ids=["direct", "through-memory"])
async def test_get_looks_in_workflow_then_session_then_actor_then_global(
    memory: Any, client: ClientFactory, direct_reads: bool
) -> None:
    c = await client("planner", session_id="s-1", workflow_id="t-1", direct_reads=direct_reads)
    await c.global_scope.set("tone", "global")
    assert await c.get("tone") == "global"
    await c.actor().set("tone", "actor")
    assert await c.get("tone") == "actor"
    await c.session("s-1").set("tone", "session")
    assert await c.get("tone") == "session"
    await c.set("tone", "workflow")  # the client's workflow_id
    entry = await c.get_entry("tone")
    assert entry is not None and (entry.value, entry.scope, entry.scope_id) == ("workflow", "workflow", "t-1")
    assert await c.delete("tone") is True
    assert await c.get("tone") == "session"
    await c.session("s-1").delete("tone")
    await c.actor().delete("tone")
    assert (await c.get_entry("tone")).scope == "global"  # type: ignore[union-attr]
    await c.global_scope.delete("tone")
    assert await c.get("tone", "none") == "none" and await c.exists("tone") is False
    assert await c.delete("tone") is False


async def test_compare_and_set_names_the_current_version(memory: Any, client: ClientFactory) -> None:
    c = await client("ledger", workflow_id="t-cas")
    first = await c.set("counter", 1, if_version=0)  # create only
    with pytest.raises(VersionConflict) as conflict:
        await c.set("counter", 99, if_version=0)
    assert (conflict.value.current, conflict.value.expected) == (first, 0)
    assert f"at version {first}" in str(conflict.value)
    second = await c.set("counter", 2, if_version=first)
    with pytest.raises(VersionConflict) as stale:
        await c.set("counter", 3, if_version=first)
    assert stale.value.current == second
    with pytest.raises(VersionConflict):
        await c.delete("counter", if_version=first)
    assert await c.get("counter") == 2
    # Racing increments under compare-and-set: every one lands exactly once.
    others = [await client(f"worker-{i}", workflow_id="t-cas") for i in range(3)]

    async def increment(worker: MemoryClient) -> None:
        for _ in range(5):
            while True:
                entry = await worker.get_entry("counter")
                assert entry is not None
                try:
                    await worker.set("counter", entry.value + 1, if_version=entry.version)
                    break
                except VersionConflict:
                    continue

    await asyncio.gather(*(increment(w) for w in others))
    assert await c.get("counter") == 2 + 15


async def test_a_ttl_expiry_is_published_as_an_expire_event(memory: Any, client: ClientFactory) -> None:
    c = await client("cache", workflow_id="t-ttl")
    events: list[ChangeEvent] = []

    @c.workflow("t-ttl").on_change("session_token")
    async def changed(event: ChangeEvent) -> None:
        events.append(event)

    await asyncio.sleep(0.2)  # the listener starts in the background
    version = await c.set("session_token", {"token": "abc"}, ttl_s=1)
    entry = await c.get_entry("session_token")
    assert entry is not None and entry.expires_at is not None
    assert 0.5 < entry.expires_at - entry.updated_at <= 1.0
    await eventually(lambda: len(events) == 2, timeout=10)
    assert [e.action for e in events] == ["set", "expire"]
    expired = events[1]
    assert (expired.data, expired.previous_data, expired.by) == (None, {"token": "abc"}, "")
    assert expired.version > version
    assert await c.get("session_token") is None
    assert [h.action for h in await c.history("session_token")] == ["expire", "set"]


async def test_on_change_with_agentfield_patterns_sees_only_matching_keys(
    memory: Any, client: ClientFactory
) -> None:
    writer = await client("crm", workflow_id="t-crm")
    listener = await client("listener")
    got: dict[str, list[tuple[str, str]]] = {"customers": [], "sentiment": [], "profile": []}

    @listener.on_change("customer_*")
    async def customers(event: ChangeEvent) -> None:
        got["customers"].append((event.key, event.action))

    @listener.on_change("ticket:*:sentiment")
    def sentiment(event: ChangeEvent) -> None:  # a plain function runs on a worker thread
        got["sentiment"].append((event.key, event.action))

    @listener.global_scope.on_change(["user_*.preferences", "user_*.settings"])
    async def profile(event: ChangeEvent) -> None:
        got["profile"].append((event.key, event.scope))

    await asyncio.sleep(0.3)
    for key in ("customer_42", "customer_7", "customers", "ticket:9:sentiment", "ticket:9:status",
                "ticket:10:sentiment"):
        await writer.set(key, 1)
    await writer.delete("customer_7")
    await writer.global_scope.set("user_42.preferences", {"theme": "dark"})
    await writer.global_scope.set("user_42.settings", {"lang": "en"})
    await writer.global_scope.set("user_42.history", [])
    await writer.set("user_1.preferences", {})  # workflow scope: not the global subscription's
    await eventually(lambda: len(got["profile"]) == 2 and len(got["customers"]) == 3 and len(got["sentiment"]) == 2)
    await asyncio.sleep(0.3)  # nothing else arrives late
    assert got["customers"] == [("customer_42", "set"), ("customer_7", "set"), ("customer_7", "delete")]
    assert got["sentiment"] == [("ticket:9:sentiment", "set"), ("ticket:10:sentiment", "set")]
    assert got["profile"] == [("user_42.preferences", "global"), ("user_42.settings", "global")]
    # The server narrows by scope and by a pattern's literal leading tokens; the client does the rest.
    assert listener.global_scope.watch(["orders.eu.*", "orders.*"]).filters == ["memory.change.global._.orders.>"]
    assert listener.workflow("t-crm").watch("ticket:7").filters == ["memory.change.workflow.t-crm.ticket=3A7"]


async def test_a_late_subscriber_replays_from_a_time_or_a_sequence(memory: Any, client: ClientFactory) -> None:
    writer = await client("writer", workflow_id="t-late")
    before = time.time() - 1
    for i in range(3):
        await writer.set(f"step.{i}", i)
    late = await client("late")
    async with late.watch("step.*", since=before) as replay:
        first = [await replay.next(5) for _ in range(3)]
    assert [(e.key, e.data) for e in first if e] == [("step.0", 0), ("step.1", 1), ("step.2", 2)]
    assert first[0] is not None and first[2] is not None
    async with late.watch("step.*", from_seq=first[1].seq) as resumed:  # type: ignore[union-attr]
        again = [await resumed.next(5), await resumed.next(5)]
        await writer.set("step.3", 3)
        live = await resumed.next(5)
    assert [e.key for e in again if e] == ["step.1", "step.2"]
    assert live is not None and live.key == "step.3" and live.seq > first[2].seq
    async with late.watch("step.*") as only_new:  # no replay: only what comes after
        await writer.set("step.4", 4)
        fresh = await only_new.next(5)
    assert fresh is not None and fresh.key == "step.4"


async def test_list_keys_pages_through_a_scope(memory: Any, client: ClientFactory) -> None:
    c = await client("lister")
    scope = c.session("s-list")
    for i in range(25):
        await scope.set(f"item:{i:02d}", i)
    await scope.set("other", 0)
    assert await scope.list_keys("item:") == [f"item:{i:02d}" for i in range(25)]
    assert await scope.list_keys("item:", limit=3) == ["item:00", "item:01", "item:02"]
    raw = await c.operation({"op": "kv.list", "scope": "session", "scope_id": "s-list", "limit": 10})
    assert len(raw["keys"]) == 10 and raw["next_cursor"] == "item:09"
    raw = await c.operation({"op": "kv.list", "scope": "session", "scope_id": "s-list", "limit": 10,
                             "cursor": "item:19"})
    assert raw["keys"] == [f"item:{i}" for i in range(20, 25)] + ["other"] and raw["next_cursor"] is None


async def _raw(agent: AsyncAgent, payload: str) -> dict[str, Any]:
    reply = await agent.request("memory", payload, content_type="application/json", trace_id="t-bad", timeout=10)
    return dict(json.loads(reply.payload))


async def test_bad_input_gets_a_clear_error_and_nothing_is_written(memory: Any, client: ClientFactory) -> None:
    c = await client("fuzzer", workflow_id="t-bad")
    agent = c.agent
    cases: list[tuple[str, str]] = [
        ('{"op": "kv.set", "key": "k", "value": NaN}', "NaN is not valid JSON"),
        ('{"op": "kv.set", "key": "k", "value": ', "not valid JSON"),
        (json.dumps({"op": "kv.set", "key": "k", "value": "x" * 300_000}), "at most 262144"),
        (json.dumps({"op": "kv.set", "key": "k" * 513, "value": 1}), "at most 512"),
        (json.dumps({"op": "kv.set", "key": "", "value": 1}), "is empty"),
        (json.dumps({"op": "kv.set", "key": "a..b", "value": 1}), "empty part between dots"),
        (json.dumps({"op": "kv.set", "key": "k", "value": 1, "ttl_s": 0}), "ttl_s"),
        (json.dumps({"op": "kv.set", "key": "k", "value": 1, "scope": "session"}), "needs \"scope_id\""),
        (json.dumps({"op": "kv.set", "key": "k", "value": 1, "deadline": time.time() - 5}), "after its deadline"),
        (json.dumps({"op": "kv.frobnicate", "key": "k"}), "unknown op"),
    ]
    for payload, problem in cases:
        reply = await _raw(agent, payload)
        assert reply["status"] == "error" and problem in reply["error"], (payload[:60], reply)
        assert len(reply["error"]) < 400
    # The SDK refuses the same before sending anything.
    with pytest.raises(SharedMemoryError, match="cannot be stored as JSON"):
        await c.set("k", float("nan"))
    with pytest.raises(SharedMemoryError, match="empty part"):
        await c.set("k.", 1)
    assert await c.list_keys() == []
    info = await jetstream(agent).stream_info(CHANGES_STREAM)
    assert info.state.messages == 0
    stats = await c.stats()
    assert stats["shared"]["writes"] == 0


async def test_scopes_are_written_only_by_whom_the_rules_allow(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory
) -> None:
    await make_daemon(nats_url, clock=time.time, shared={"global_writers": ["ops"]}, security={"admins": ["root"]})
    deploy = await client("deploy")
    ops = await client("ops")
    root = await client("root")
    await deploy.actor().set("preferences", {"tone": "terse"})
    with pytest.raises(SharedAccessDenied) as denied:
        await deploy.actor("monitor").set("preferences", {})
    assert (denied.value.handle, denied.value.scope, denied.value.scope_id) == ("deploy", "actor", "monitor")
    with pytest.raises(SharedAccessDenied, match="only ops may"):
        await deploy.global_scope.set("config", {})
    await ops.global_scope.set("config", {"region": "eu"})
    await root.actor("deploy").set("preferences", {"tone": "fixed-by-admin"})  # admins may
    assert await deploy.actor().get("preferences") == {"tone": "fixed-by-admin"}
    with pytest.raises(SharedAccessDenied):
        await ops.actor("deploy").delete("preferences")
    assert await deploy.global_scope.get("config") == {"region": "eu"}  # anyone may read


async def test_a_redelivered_write_is_applied_once(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory, tmp_path: Any
) -> None:
    first = await make_daemon(nats_url, clock=time.time)
    reader = await client("reader")
    msg = Message(session="s-x", from_handle="deploy", to_handle="memory",
                  payload=json.dumps({"op": "kv.set", "key": "k", "value": "v"}), content_type="application/json",
                  message_type="session_open", trace_id="t-redeliver", message_id="m-1", sent_at=time.time(),
                  sequence=1)
    one = json.loads((await first.handlers.handle(msg)).payload)  # type: ignore[union-attr]
    two = json.loads((await first.handlers.handle(msg)).payload)  # type: ignore[union-attr]
    assert one == two and one["status"] == "ok"
    await first.close()
    restarted = await make_daemon(nats_url, clock=time.time)  # no memory of m-1 but the value's header
    three = json.loads((await restarted.handlers.handle(msg)).payload)  # type: ignore[union-attr]
    assert three == one
    assert [c.version for c in await reader.workflow("t-redeliver").history("k")] == [one["version"]]


async def test_another_sender_may_choose_the_same_message_id(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory
) -> None:
    """A message id is unique among one sender's messages only: the same id from another agent is another
    write, applied (not answered with the first sender's reply), before and after a restart."""
    daemon = await make_daemon(nats_url, clock=time.time)
    reader = await client("reader")

    def write(sender: str, value: str) -> Message:
        return Message(session=f"s-{sender}", from_handle=sender, to_handle="memory",
                       payload=json.dumps({"op": "kv.set", "key": "k", "value": value}),
                       content_type="application/json", message_type="session_open", trace_id="t-same-id",
                       message_id="m-1", sent_at=time.time(), sequence=1)

    deploy = json.loads((await daemon.handlers.handle(write("deploy", "v"))).payload)  # type: ignore[union-attr]
    canary = json.loads((await daemon.handlers.handle(write("canary", "w"))).payload)  # type: ignore[union-attr]
    assert deploy["status"] == canary["status"] == "ok" and canary["version"] > deploy["version"]
    await daemon.close()
    restarted = await make_daemon(nats_url, clock=time.time)
    again = json.loads((await restarted.handlers.handle(write("canary", "w"))).payload)  # type: ignore[union-attr]
    assert again == canary  # canary's own redelivery, known from the value's header
    history = await reader.workflow("t-same-id").history("k")
    assert [(c.version, c.data, c.by) for c in history] == [(canary["version"], "w", "canary"),  # newest first
                                                            (deploy["version"], "v", "deploy")]


async def test_reads_go_on_while_memory_is_down_and_a_write_that_timed_out_never_lands(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="memory_agent.shared")
    daemon = await make_daemon(nats_url, clock=time.time)
    c = await client("agent", workflow_id="t-down", timeout=1.5)
    await c.set("plan", "a")
    await daemon.close()
    assert await c.get("plan") == "a"  # straight from JetStream
    with pytest.raises(TimeoutError):  # MeshTimeout: queued in @memory's inbox, the caller gave up
        await c.set("plan", "b")
    await make_daemon(nats_url, clock=time.time)
    await eventually(lambda: "after its deadline" in caplog.text, timeout=15)  # delivered, and refused
    assert await c.get("plan") == "a"
    assert [h.data for h in await c.history("plan")] == ["a"]
    await c.set("plan", "c")
    assert await c.get("plan") == "c"


async def test_state_survives_a_daemon_restart(nats_url: str, make_daemon: DaemonFactory, client: ClientFactory) -> None:
    daemon = await make_daemon(nats_url, clock=time.time)
    c = await client("keeper", workflow_id="t-keep", direct_reads=False)
    await c.set("progress", {"done": 3})
    await c.global_scope.set("runbook", "v2")
    await daemon.close()
    await make_daemon(nats_url, clock=time.time)
    assert await c.get("progress") == {"done": 3}
    assert await c.global_scope.get("runbook") == "v2"
    assert await c.list_keys() == ["progress"]


async def test_a_value_that_expires_while_memory_is_down_gets_its_event_when_it_is_back(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory
) -> None:
    daemon = await make_daemon(nats_url, clock=time.time)
    c = await client("cache", workflow_id="t-offline")
    await c.set("lease", "mine", ttl_s=1)
    await daemon.close()
    deadline = time.monotonic() + 10
    while await c.get("lease") is not None and time.monotonic() < deadline:  # the server expires it alone
        await asyncio.sleep(0.1)
    assert await c.get("lease") is None
    await make_daemon(nats_url, clock=time.time)
    changes = await eventually(lambda: _expired(c), timeout=10)
    assert [(h.action, h.previous_data) for h in changes] == [("expire", "mine"), ("set", None)]


async def _expired(c: MemoryClient) -> list[ChangeEvent] | None:
    changes = await c.history("lease")
    return changes if changes and changes[0].action == "expire" else None


async def test_a_full_bucket_refuses_writes_with_a_clear_error(
    nats_url: str, make_daemon: DaemonFactory, client: ClientFactory
) -> None:
    await make_daemon(nats_url, clock=time.time, shared={"state_max_bytes": 1024 * 1024})
    c = await client("filler", workflow_id="t-full")
    big = "x" * 200_000
    with pytest.raises(SharedMemoryUnavailable, match="shared memory is full"):
        for i in range(10):
            await c.set(f"blob.{i}", big)
    assert len(await c.list_keys()) < 10
    assert await c.delete("blob.0") is True  # a delete still goes through, and frees room
    await c.set("small", 1)
