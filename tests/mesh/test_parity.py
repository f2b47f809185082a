"""Parity with tailbus: agents written the way tailbus's example agents are (alexanderfrey/tailbus,
``examples/docker``, ``multi-agent``, ``incident-room``), using only ``from mesh import ...`` and tailbus's
calls, types and constructor (``socket=os.environ.get("TAILBUS_SOCKET", ...)``; the server comes from
``$NATS_URL``). tailbus's examples are not copied here: these are our own agents doing what they do.

* echo: open a session, get the echo back as the resolve;
* an orchestrator that delegates by discovery (``find_handles``) to a calculator and to echo, waiting
  for the answers in its own handler through futures keyed by session;
* a researcher -> critic -> writer chain;
* an incident room: an orchestrator finds five specialists by capability, opens a room with them,
  posts the incident and a turn request per specialist, collects their replies from room events,
  replays the room into a report and closes the room; a late specialist gets tailbus's closed-room error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mesh import AsyncAgent, BridgeError, CommandSpec, Manifest, Message, RoomEvent

Start = Callable[[AsyncAgent], Awaitable[None]]


@pytest.fixture
async def run(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Start]:
    """``await run(agent)``: start, register and serve an agent like tailbus's ``main()`` does, in the
    background; every agent is closed at teardown."""
    monkeypatch.setenv("NATS_URL", nats_url)
    agents: list[AsyncAgent] = []
    tasks: list[asyncio.Task[None]] = []

    async def start(agent: AsyncAgent) -> None:
        agents.append(agent)
        await agent.start()
        await agent.register()
        tasks.append(asyncio.create_task(agent.run_forever()))

    yield start
    for agent in reversed(agents):
        await agent.close()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


def tailbus_agent(handle: str, manifest: Manifest | None = None) -> AsyncAgent:
    return AsyncAgent(handle, manifest=manifest, socket=os.environ.get("TAILBUS_SOCKET", "/tmp/tailbusd.sock"))


def echo_agent() -> AsyncAgent:
    agent = tailbus_agent("echo", Manifest(description="Echoes messages back", tags=["utility", "demo"],
                                           version="1.0.0"))

    @agent.on_message
    async def handle(msg: Message) -> None:
        await agent.resolve(msg.session, f"Echo from {agent.handle}: {msg.payload}")

    return agent


def calculator_agent() -> AsyncAgent:
    agent = tailbus_agent("calculator", Manifest(
        description="Adds and multiplies", capabilities=["math.calculate"], tags=["math"], version="1.0.0",
        commands=[CommandSpec(name="add", description="a + b"), CommandSpec(name="multiply", description="a * b")]))

    @agent.on_message
    async def handle(msg: Message) -> None:
        data = json.loads(msg.payload)
        a, b = data["arguments"]["a"], data["arguments"]["b"]
        result = a + b if data["command"] == "add" else a * b
        await agent.resolve(msg.session, json.dumps({"result": result}), content_type="application/json")

    return agent


class Delegator:
    """tailbus examples' ``delegate()``: open a session, wait for the reply in the handler by session."""

    def __init__(self, agent: AsyncAgent) -> None:
        self.agent = agent
        self.pending: dict[str, asyncio.Future[str]] = {}

    def take(self, msg: Message) -> bool:
        fut = self.pending.pop(msg.session, None)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(msg.payload)
        return True

    async def delegate(self, target: str, payload: str, timeout: float = 10) -> str:
        opened = await self.agent.open_session(target, payload, content_type="application/json")
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending[opened.session] = fut
        try:
            return await asyncio.wait_for(fut, timeout=timeout)
        except TimeoutError:
            self.pending.pop(opened.session, None)
            raise


def orchestrator_agent() -> AsyncAgent:
    agent = tailbus_agent("orchestrator", Manifest(description="Orchestrates tasks", tags=["orchestration"],
                                                   commands=[CommandSpec(name="compute", description="math")]))
    calls = Delegator(agent)

    @agent.on_message
    async def handle(msg: Message) -> None:
        if calls.take(msg):
            return
        data = json.loads(msg.payload)
        if data["command"] == "compute":
            [match] = await agent.find_handles(capabilities=["math.calculate"], limit=1)
            result = json.loads(await calls.delegate(match.handle, json.dumps(
                {"command": data["operation"], "arguments": {"a": data["a"], "b": data["b"]}})))
            await agent.resolve(msg.session, json.dumps({"delegated_to": match.handle, "result": result}),
                                content_type="application/json")
        elif data["command"] == "ping":
            await agent.resolve(msg.session, json.dumps({"response": await calls.delegate("echo", data["message"])}),
                                content_type="application/json")
        else:
            handles = await agent.list_handles()
            await agent.resolve(msg.session, json.dumps({"error": f"Unknown command: {data['command']}",
                                                         "available_agents": [h.handle for h in handles]}))

    return agent


def client_agent(handle: str = "user") -> tuple[AsyncAgent, Callable[[str, str], Awaitable[str]]]:
    """A client that opens a session and waits for the resolve in its handler (tailbus has no request())."""
    agent = tailbus_agent(handle)
    calls = Delegator(agent)

    @agent.on_message
    async def handle_reply(msg: Message) -> None:
        calls.take(msg)

    return agent, calls.delegate


async def test_echo(run: Start) -> None:
    await run(echo_agent())
    user, ask = client_agent()
    await run(user)
    assert await ask("echo", "hello") == "Echo from echo: hello"


async def test_orchestrator_delegates_by_discovery(run: Start) -> None:
    for agent in (echo_agent(), calculator_agent(), orchestrator_agent()):
        await run(agent)
    user, ask = client_agent()
    await run(user)
    answer = json.loads(await ask("orchestrator", json.dumps({"command": "compute", "operation": "multiply",
                                                              "a": 6, "b": 7})))
    assert answer == {"delegated_to": "calculator", "result": {"result": 42}}
    assert json.loads(await ask("orchestrator", json.dumps({"command": "ping", "message": "hi"}))) == {
        "response": "Echo from echo: hi"}
    unknown = json.loads(await ask("orchestrator", json.dumps({"command": "dance"})))
    assert unknown["available_agents"] == ["calculator", "echo", "orchestrator", "user"]


def chain_agent(handle: str, work: Callable[[dict[str, Any]], dict[str, Any]],
                next_steps: list[str]) -> AsyncAgent:
    """researcher / critic / writer: do its part, pass the result down the chain, resolve with the end."""
    agent = tailbus_agent(handle, Manifest(description=handle, tags=["llm", handle], version="1.0.0"))
    calls = Delegator(agent)

    @agent.on_message
    async def handle_msg(msg: Message) -> None:
        if calls.take(msg):
            return
        try:
            data = json.loads(msg.payload)
        except json.JSONDecodeError:
            data = {"topic": msg.payload}
        data = work(data)
        for step in next_steps:
            data[step] = await calls.delegate(step, json.dumps(data))
        await agent.resolve(msg.session, data[next_steps[-1]] if next_steps else json.dumps(data))

    return agent


async def test_researcher_critic_writer_chain(run: Start) -> None:
    await run(chain_agent("critic", lambda d: {"critique": f"check the numbers in: {d['findings']}"}, []))
    await run(chain_agent("writer", lambda d: {"article": f"{d['topic']}: {d['findings']} ({d['critic']})"}, []))
    await run(chain_agent("researcher", lambda d: {**d, "findings": f"3 facts about {d['topic']}"},
                          ["critic", "writer"]))
    user, ask = client_agent()
    await run(user)
    final = json.loads(await ask("researcher", json.dumps({"topic": "rollbacks"})))
    assert final["article"].startswith("rollbacks: 3 facts about rollbacks")
    assert "check the numbers in: 3 facts about rollbacks" in final["article"]


SPECIALISTS = {
    "logs-agent": ("ops.logs.search", "5xx spike in checkout since 09:12, upstream timeouts to payments"),
    "metrics-agent": ("ops.metrics.query", "error rate 14%, p99 latency 4.2s on checkout"),
    "release-agent": ("ops.release.history", "payments v2.31 rolled out at 09:10"),
    "billing-agent": ("billing.account.lookup", "no account-level anomalies; broad impact"),
    "status-agent": ("support.status.draft", "We are investigating elevated checkout errors."),
}


def specialist_agent(handle: str, capability: str, finding: str, closed_errors: list[str]) -> AsyncAgent:
    agent = tailbus_agent(handle, Manifest(description=f"{handle} specialist", tags=["incident"],
                                           capabilities=[capability], domains=["operations"],
                                           input_types=["application/json"], output_types=["application/json"]))
    seen_turns: set[str] = set()

    @agent.on_message
    async def handle_event(msg: Message | RoomEvent) -> None:
        if not isinstance(msg, RoomEvent):
            return
        if msg.event_type != "message_posted" or msg.content_type != "application/json":
            return
        payload = json.loads(msg.payload)
        if payload.get("kind") != "turn_request" or payload.get("target_handle") != handle:
            return
        if payload["turn_id"] in seen_turns:
            return
        seen_turns.add(payload["turn_id"])
        events = await agent.replay_room(msg.room_id)  # the example specialists read the room first
        incident = next(json.loads(e.payload) for e in events if e.event_type == "message_posted"
                        and json.loads(e.payload).get("kind") == "incident")
        reply = {"kind": "solver_reply", "turn_id": payload["turn_id"], "author": handle, "status": "ok",
                 "capability": capability, "content": f"{incident['title']}: {finding}"}
        try:
            await agent.post_room_message(msg.room_id, json.dumps(reply), content_type="application/json",
                                          trace_id=payload["turn_id"])
        except BridgeError as exc:  # how tailbus's examples recognise a closed room
            if "room" in str(exc).lower() and "is closed" in str(exc).lower():
                closed_errors.append(handle)
            else:
                raise

    return agent


def incident_orchestrator() -> AsyncAgent:
    agent = tailbus_agent("incident-orchestrator", Manifest(
        description="Coordinates an incident room", capabilities=["incident.orchestrate", "room.manage"],
        commands=[CommandSpec(name="open_incident", description="Open an incident room")]))
    pending_turns: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def post_room(room_id: str, payload: dict[str, Any]) -> None:
        await agent.post_room_message(room_id, json.dumps(payload), content_type="application/json",
                                      trace_id=str(payload.get("turn_id", payload.get("incident_id", ""))))

    async def handle_room_event(event: RoomEvent) -> None:
        if event.event_type != "message_posted" or event.content_type != "application/json":
            return
        payload = json.loads(event.payload)
        if payload.get("kind") == "solver_reply":
            future = pending_turns.get(payload["turn_id"])
            if future is not None and not future.done():
                future.set_result(payload)

    async def request_turn(room_id: str, incident_id: str, target: str, capability: str) -> dict[str, Any]:
        turn_id = f"{incident_id}-{target}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending_turns[turn_id] = future
        await post_room(room_id, {"kind": "turn_request", "turn_id": turn_id, "incident_id": incident_id,
                                  "target_handle": target, "target_capability": capability})
        try:
            return await asyncio.wait_for(future, timeout=20)
        finally:
            pending_turns.pop(turn_id, None)

    @agent.on_message
    async def handle(msg: Message | RoomEvent) -> None:
        if isinstance(msg, RoomEvent):
            await handle_room_event(msg)
            return
        incident = json.loads(msg.payload)
        discovered = []
        for capability in [c for c, _ in SPECIALISTS.values()]:
            [match] = await agent.find_handles(capabilities=[capability], limit=1)
            discovered.append((match.handle, capability))
        room_id = await agent.create_room(f"{incident['incident_id']} {incident['title']}",
                                          sorted(h for h, _ in discovered))
        await post_room(room_id, {"kind": "incident", **incident})
        replies = await asyncio.gather(*(request_turn(room_id, incident["incident_id"], h, c) for h, c in discovered))
        events = await agent.replay_room(room_id)
        lines = [f"# {incident['title']} ({len(events)} room events)"]
        for event in events:
            if event.event_type == "message_posted":
                body = json.loads(event.payload)
                if body["kind"] == "solver_reply":
                    lines.append(f"- #{event.room_seq} @{event.sender_handle}: {body['content']}")
        await agent.close_room(room_id)
        await agent.resolve(msg.session, json.dumps({"room_id": room_id, "report": "\n".join(lines),
                                                     "replies": len(replies)}), content_type="application/json")

    return agent


async def test_incident_room_with_five_specialists(run: Start) -> None:
    closed_errors: list[str] = []
    for handle, (capability, finding) in SPECIALISTS.items():
        await run(specialist_agent(handle, capability, finding, closed_errors))
    orchestrator = incident_orchestrator()
    await run(orchestrator)
    user, ask = client_agent("support")
    await run(user)
    answer = json.loads(await ask("incident-orchestrator", json.dumps(
        {"incident_id": "INC-7", "title": "Checkout errors", "severity": "sev2"}), timeout=60))
    assert answer["replies"] == 5
    report = answer["report"].splitlines()
    assert report[0] == "# Checkout errors (11 room events)"  # incident + 5 requests + 5 replies
    assert sorted(line.split(":")[0].split("@")[1] for line in report[1:]) == sorted(SPECIALISTS)
    assert any("payments v2.31 rolled out at 09:10" in line for line in report)
    room_id = answer["room_id"]
    [info] = await orchestrator.list_rooms()
    assert (info.room_id, info.status, info.title) == (room_id, "closed", "INC-7 Checkout errors")
    # A specialist that answers a turn after the room closed gets tailbus's closed-room error.
    await orchestrator_post_late_turn(room_id, closed_errors)


async def orchestrator_post_late_turn(room_id: str, closed_errors: list[str]) -> None:
    late = specialist_agent("late-agent", "ops.late", "too late", closed_errors)
    async with late:
        await late.register()
        with pytest.raises(BridgeError) as info:
            await late.post_room_message(room_id, "{}", content_type="application/json")
        assert "room" in str(info.value).lower() and "is closed" in str(info.value).lower()
