"""@memory in rooms: it remembers the rooms it is invited to, and only those (real nats-server, real daemon)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from memory_agent.daemon import MemoryDaemon
from memory_agent.types import Filters
from mesh import AsyncAgent

REPO = Path(__file__).resolve().parents[2]


async def ask(agent: AsyncAgent, query: str, **extra: Any) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps({"query": query, **extra}), content_type="application/json",
                                timeout=30)
    return dict(json.loads(reply.payload))


async def stored(daemon: MemoryDaemon, room_id: str, count: int, timeout: float = 20.0) -> None:
    """Wait until @memory holds ``count`` events of the room (room events arrive on their own consumer)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await daemon.store.select(None, Filters(event=("room_message",)))
        if sum(1 for e in rows if e.payload["room_id"] == room_id) >= count:
            return
        assert asyncio.get_running_loop().time() < deadline, f"@memory did not store {count} events of {room_id}"
        await asyncio.sleep(0.1)


async def test_an_invited_memory_stores_the_posts_and_answers_about_the_room(start_daemon, mesh_agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memory_agent.config import EmbeddingConfig
    from memory_agent.embedding.base import load_embedder

    # The bundled MiniLM: the question's meaning ("decide about the rollback") must find the decision; the
    # relevance floor rightly finds nothing with a hashing test embedder.
    embedder = await asyncio.to_thread(load_embedder, EmbeddingConfig(), data_dir=tmp_path / "model")
    daemon = await start_daemon(embedder=embedder)
    lead, ops = await mesh_agent("lead"), await mesh_agent("ops")
    room_id = await lead.create_room("INC-9 checkout errors", ["ops", "memory"], trace_id="INC-9")
    await ops.post_room_message(room_id, "payments v2.31 rolled out at 09:10, pool 50 -> 5")
    await lead.post_room_message(room_id, json.dumps({"kind": "decision", "content": "rollback of payments to v2.30"}),
                                 content_type="application/json")
    await stored(daemon, room_id, 2)
    await daemon.wait_embedded(timeout=120)  # acknowledged on commit, embedded behind: ask once embedded
    rows = await daemon.store.select(None, Filters(event=("room_message",)))
    assert [(e.from_handle, e.trace_id, e.payload["room_title"], e.payload["room_seq"]) for e in rows] == [
        ("ops", "INC-9", "INC-9 checkout errors", 1), ("lead", "INC-9", "INC-9 checkout errors", 2)]
    assert rows[1].payload["message"] == {"kind": "decision", "content": "rollback of payments to v2.30"}
    answer = await ask(lead, "What did the incident room decide about the rollback?")
    assert answer["events"] and answer["events"][0]["id"] == rows[1].id, answer
    timeline = await ask(lead, "Give me the timeline of trace INC-9")
    assert [e["id"] for e in timeline["events"]] == [rows[0].id, rows[1].id]


async def test_memory_never_stores_a_room_it_was_not_invited_to(start_daemon, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    lead, ops = await mesh_agent("lead"), await mesh_agent("ops")
    private = await lead.create_room("private", ["ops"])
    await ops.post_room_message(private, "not for @memory")
    invited_later = await lead.create_room("war room", ["ops"])
    await ops.post_room_message(invited_later, "before @memory came")
    await lead.invite_to_room(invited_later, "memory")
    await ops.post_room_message(invited_later, "after @memory came")
    # Posts reach members in order: once the last post to the invited room is stored, the earlier ones
    # to the other room would have been too, had @memory been sent them.
    await stored(daemon, invited_later, 1)
    rows = await daemon.store.select(None, Filters())
    assert [(e.payload["room_id"], e.payload["message"]) for e in rows] == [(invited_later, "after @memory came")]


async def test_the_incident_room_example_with_memory_in_the_room(start_daemon, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(REPO / "examples" / "incident_room.py"), "--nats-url", nats_url],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert "opened with 5 specialists and @memory" in done.stdout
    assert "## Decision" in done.stdout and "@memory: " in done.stdout
    [room_id] = {e.session for e in await daemon.store.select(None, Filters(event=("room_message",)))}
    await stored(daemon, room_id, 12)  # the incident, 5 turn requests, 5 findings, the decision
    posters = [e.from_handle for e in await daemon.store.select(None, Filters(event=("room_message",)))]
    assert posters.count("incident-orchestrator") == 7 and len(set(posters)) == 6
