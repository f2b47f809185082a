"""An incident room: an orchestrator finds five specialists by capability, opens a room with them, asks each
for its part, and replays the room into a report. Written as a tailbus agent would be (the same calls,
types and constructor), on the mesh.

    python examples/incident_room.py                       # starts its own nats-server (temporary store)
    python examples/incident_room.py --nats-url nats://127.0.0.1:4222

Every specialist reads the room before it answers (``replay_room``) and posts its finding with the
turn's id as trace id; the orchestrator waits for the answers as room events, posts the room's decision,
replays the whole room into a markdown report, closes the room and answers the session that asked for it.

When @memory is on the mesh (``memory-agent run``), the orchestrator invites it into the room: @memory
stores every post, and afterwards anyone can ask it about the room ("What did the incident room decide
about the rollback?"); the example asks that at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mesh import AsyncAgent, CommandSpec, Manifest, Message, NatsServer, RoomEvent

SOCKET = os.environ.get("TAILBUS_SOCKET", "/tmp/tailbusd.sock")  # read by tailbus agents; ignored by the mesh

# handle -> (capability, what it finds for the checkout incident)
SPECIALISTS: dict[str, tuple[str, str]] = {
    "logs-agent": ("ops.logs.search", "5xx spike on checkout since 09:12; upstream timeouts to payments"),
    "metrics-agent": ("ops.metrics.query", "checkout error rate 14%, p99 latency 4.2 s (baseline 0.4 s)"),
    "release-agent": ("ops.release.history", "payments v2.31 rolled out at 09:10, connection pool 50 -> 5"),
    "billing-agent": ("billing.account.lookup", "no account-level anomaly: every region is affected"),
    "status-agent": ("support.status.draft", "We are investigating elevated checkout errors."),
}


DECISION = "Decision: rollback of payments to v2.30 now; restore the connection pool to 50 before v2.32."


def specialist(handle: str, capability: str, finding: str) -> AsyncAgent:
    agent = AsyncAgent(handle, socket=SOCKET, manifest=Manifest(
        description=f"incident specialist ({capability})", tags=["incident"], capabilities=[capability],
        domains=["operations"], input_types=["application/json"], output_types=["application/json"]))

    @agent.on_message
    async def on_event(msg: Message | RoomEvent) -> None:
        if not isinstance(msg, RoomEvent) or msg.event_type != "message_posted":
            return
        turn = json.loads(msg.payload)
        if turn.get("kind") != "turn_request" or turn.get("target_handle") != handle:
            return
        events = await agent.replay_room(msg.room_id)
        incident = next(json.loads(e.payload) for e in events
                        if e.event_type == "message_posted" and json.loads(e.payload).get("kind") == "incident")
        reply = {"kind": "solver_reply", "turn_id": turn["turn_id"], "author": handle, "capability": capability,
                 "status": "ok", "content": finding, "incident_id": incident["incident_id"]}
        await agent.post_room_message(msg.room_id, json.dumps(reply), content_type="application/json",
                                      trace_id=turn["turn_id"])

    return agent


def orchestrator() -> AsyncAgent:
    agent = AsyncAgent("incident-orchestrator", socket=SOCKET, manifest=Manifest(
        description="Coordinates an incident room", capabilities=["incident.orchestrate"],
        commands=[CommandSpec(name="open_incident", description="Open an incident room and report on it")]))
    pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def ask(room_id: str, incident_id: str, handle: str, capability: str) -> dict[str, Any]:
        turn_id = f"{incident_id}/{handle}"
        pending[turn_id] = asyncio.get_running_loop().create_future()
        await agent.post_room_message(room_id, json.dumps({
            "kind": "turn_request", "turn_id": turn_id, "target_handle": handle, "target_capability": capability,
        }), content_type="application/json", trace_id=turn_id)
        try:
            return await asyncio.wait_for(pending[turn_id], timeout=30)
        finally:
            pending.pop(turn_id, None)

    async def open_incident(msg: Message) -> None:
        incident = json.loads(msg.payload)
        found = []
        for capability, _ in SPECIALISTS.values():
            matches = await agent.find_handles(capabilities=[capability], limit=1)
            if matches:
                found.append((matches[0].handle, capability))
        # @memory remembers the rooms it is invited to (and only those).
        memory = await agent.introspect("memory")
        members = [handle for handle, _ in found] + (["memory"] if memory.found and memory.online else [])
        room_id = await agent.create_room(f"{incident['incident_id']} {incident['title']}", members,
                                          trace_id=incident["incident_id"])
        print(f"orchestrator: room {room_id[:8]} opened with {len(found)} specialists"
              + (" and @memory" if "memory" in members else ""))
        await agent.post_room_message(room_id, json.dumps({"kind": "incident", **incident}),
                                      content_type="application/json")
        await asyncio.gather(*(ask(room_id, incident["incident_id"], h, c) for h, c in found))
        await agent.post_room_message(room_id, json.dumps({"kind": "decision", "content": DECISION}),
                                      content_type="application/json")
        events = await agent.replay_room(room_id)
        await agent.close_room(room_id)
        await agent.resolve(msg.session, report(incident, events), content_type="text/markdown")

    @agent.on_message
    async def on_message(msg: Message | RoomEvent) -> None:
        if isinstance(msg, RoomEvent):
            if msg.event_type == "message_posted" and msg.content_type == "application/json":
                body = json.loads(msg.payload)
                future = pending.get(body.get("turn_id", ""))
                if body.get("kind") == "solver_reply" and future is not None and not future.done():
                    future.set_result(body)
        elif msg.message_type == "session_open":
            await open_incident(msg)

    return agent


def report(incident: dict[str, Any], events: list[RoomEvent]) -> str:
    lines = [f"# {incident['incident_id']}: {incident['title']} ({incident['severity']})", "",
             f"{len(events)} room events, trace {events[0].trace_id}", "", "## Findings"]
    for event in events:
        body = json.loads(event.payload) if event.content_type == "application/json" else {}
        if body.get("kind") == "solver_reply":
            lines.append(f"- #{event.room_seq} @{event.sender_handle} ({body['capability']}): {body['content']}")
        elif body.get("kind") == "decision":
            lines += ["", "## Decision", body["content"]]
    return "\n".join(lines)


async def demo(url: str) -> None:
    os.environ["NATS_URL"] = url  # agents written for tailbus give no server: the mesh reads $NATS_URL
    agents = [specialist(h, c, f) for h, (c, f) in SPECIALISTS.items()] + [orchestrator()]
    support = AsyncAgent("support")
    try:
        for agent in [*agents, support]:
            await agent.start()
            await agent.register()
        reply = await support.request("incident-orchestrator", json.dumps({
            "incident_id": "INC-7", "title": "Checkout errors", "severity": "sev2"}),
            content_type="application/json", timeout=60)
        print(reply.payload)
        [room] = await agents[-1].list_rooms()
        print(f"room {room.room_id[:8]}: {room.status}, {len(room.members)} members, next seq {room.next_seq}")
        if "memory" in room.members:
            answer = await support.request("memory", "What did the incident room decide about the rollback?",
                                           timeout=60)
            print(f"@memory: {answer.payload}")
    finally:
        for agent in [support, *reversed(agents)]:
            await agent.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="use this NATS server (JetStream enabled) instead of starting one")
    args = parser.parse_args()
    if args.nats_url:
        asyncio.run(demo(args.nats_url))
        return
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=Path(store)) as server:
        print(f"started nats-server at {server.url}")
        asyncio.run(demo(server.url))


if __name__ == "__main__":
    main()
