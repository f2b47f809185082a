"""Questions first on the wire (issue 10, item 3): a recipient's manifest says which payloads take its priority
lane; senders pick the lane by themselves; the lane has its own durable consumer and handler slots, so a
question sent after thousands of queued reports is answered before they are acknowledged."""

from __future__ import annotations

import asyncio
import json
import os

import nats
import pytest

from mesh import Manifest, Message, PriorityRule, Quotas
from mesh.constants import PRIORITY_STREAM, STREAM_NAME
from mesh.handles import durable_name
from tests.mesh.helpers import Factory

MEMORY_RULE = PriorityRule(text=True, json_keys=("query", "op"))
#: Reports queued before the question: the issue's 10,000, or 2,000 under CI=true (unless FAULT_COUNTS=full).
QUEUED = 2_000 if os.environ.get("CI") == "true" and os.environ.get("FAULT_COUNTS") != "full" else 10_000


@pytest.mark.parametrize(("payload", "lane"), [
    ("What rollbacks happened in the last 7 days?", "priority"),
    ("  why did production roll back?", "priority"),
    ('{"query": "rollbacks", "limit": 5}', "priority"),
    ('{"op": "stats"}', "priority"),
    ('  {"op": "forget", "trace_id": "t-81"}', "priority"),
    ('["a", "json", "array"]', "priority"),
    ('{"event": "rollback", "service": "api"}', "normal"),
    ('{"event": "rollback", "summary": "the \\"query\\" key only in a value"}', "normal"),
    ('{"event": "x", "nested": {"query": "not top level"}}', "normal"),
    ('{"not json', "normal"),
])
def test_the_priority_rule_decides_the_lane(payload: str, lane: str) -> None:
    assert MEMORY_RULE.lane_of(payload) == lane
    assert PriorityRule().lane_of(payload) == "normal"


def test_the_rule_travels_in_the_manifest() -> None:
    manifest = Manifest(description="remembers", priority=MEMORY_RULE)
    assert manifest.to_dict()["priority"] == {"text": True, "json_keys": ["query", "op"]}
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert "priority" not in Manifest(description="x").to_dict()  # tailbus's keys only, unless set
    with pytest.raises(TypeError):
        Manifest.from_dict({"priority": {"json_keys": "query"}})
    with pytest.raises(ValueError):
        PriorityRule(json_keys=("",))


async def test_a_question_after_thousands_of_queued_reports_is_answered_before_they_are_acknowledged(
    mesh_agent: Factory, nats_url: str
) -> None:
    # The recipient creates the streams (it starts first), with a quota that lets one reporter queue them all.
    memory = await mesh_agent("memory", register=False, max_in_flight=8, manifest=Manifest(priority=MEMORY_RULE),
                              quotas=Quotas(per_sender_messages=QUEUED + 100))
    release = asyncio.Event()
    reports_handled = 0
    lanes: dict[str, set[str]] = {"report": set(), "question": set()}

    @memory.on_message
    async def handle(msg: Message) -> None:
        nonlocal reports_handled
        if msg.payload.startswith('{"event"'):
            lanes["report"].add(msg.lane)
            await release.wait()  # reports stall: every normal-lane slot stays busy
            reports_handled += 1
            await memory.resolve(msg.session, '{"status": "stored"}')
        else:
            lanes["question"].add(msg.lane)
            await memory.resolve(msg.session, f"{reports_handled} reports stored so far")

    await memory.register()
    reporter = await mesh_agent("reporter", max_in_flight=256)
    slots = asyncio.Semaphore(200)

    async def report(i: int) -> None:
        async with slots:
            await reporter.open_session("memory", json.dumps({"event": "burst", "n": i}),
                                        content_type="application/json")

    await asyncio.gather(*(report(i) for i in range(QUEUED)))
    asker = await mesh_agent("asker")
    reply = await asker.request("memory", "How many reports are stored?", timeout=60)
    stats = await asker.request("memory", json.dumps({"op": "stats"}), content_type="application/json", timeout=60)

    nc = await nats.connect(nats_url)
    info = await nc.jetstream().consumer_info(STREAM_NAME, durable_name("memory"))
    await nc.close()
    # Answered while every report was still unacknowledged: 8 in handlers, the rest waiting in the stream.
    assert reply.payload == stats.payload == "0 reports stored so far"
    assert reports_handled == 0
    assert info.num_ack_pending + info.num_pending == QUEUED
    assert lanes == {"report": {"normal"}, "question": {"priority"}}
    release.set()


async def test_a_sender_without_a_rule_to_follow_uses_the_normal_lane(mesh_agent: Factory, nats_url: str) -> None:
    plain = await mesh_agent("plain", register=False)
    got: asyncio.Queue[Message] = asyncio.Queue()

    @plain.on_message
    async def handle(msg: Message) -> None:
        await got.put(msg)

    await plain.register()
    sender = await mesh_agent("sender")
    await sender.open_session("plain", "a question?")
    assert (await asyncio.wait_for(got.get(), 10)).lane == "normal"
    prio = await mesh_agent("prio", register=False, manifest=Manifest(priority=PriorityRule(text=True)))
    prio_got: asyncio.Queue[Message] = asyncio.Queue()

    @prio.on_message
    async def handle_prio(msg: Message) -> None:
        await prio_got.put(msg)

    await prio.register()
    await sender.open_session("prio", "short question?")
    await sender.open_session("prio", "x" * (70 * 1024))  # over the priority lane's 64 KiB: normal lane
    lanes = sorted([(await asyncio.wait_for(prio_got.get(), 10)).lane for _ in range(2)])
    assert lanes == ["normal", "priority"]
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().stream_info(PRIORITY_STREAM)
    await nc.close()
    assert info.config.max_msg_size == Quotas().priority_message_max_bytes
