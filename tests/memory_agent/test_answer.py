"""Structured questions' ``as_of`` and ``mode`` through the mesh, on a real daemon, SQLite and FAISS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mesh import AsyncAgent

# A replayed conversation from 2023; the daemon's clock says 2026-11-21 (tests/memory_agent/conftest.py).
TURNS: list[tuple[str, str, str]] = [
    ("alice", "2023-05-08T13:56:00", "Bob, which instrument are you learning these days?"),
    ("bob", "2023-05-08T13:56:00", "The cello, with lessons every Tuesday."),
    ("alice", "2023-05-08T13:56:00", "Lovely. I started pottery classes last month."),
    ("bob", "2024-02-01T10:00:00", "I finally played my first cello recital."),
]


async def ask(agent: AsyncAgent, **body: Any) -> dict[str, Any]:
    reply = await agent.request("memory", json.dumps(body), content_type="application/json", timeout=30)
    return dict(json.loads(reply.payload))


@pytest.fixture
async def chat(start_daemon, mesh_agent):  # type: ignore[no-untyped-def]
    """A daemon holding TURNS (trace "chat-1", sent in order) and an asker. These tests are about windows,
    modes and ranking with the tiny hashing embedder, whose scores the relevance floor was not calibrated
    for (it is tested in test_relevance.py), so the floor is off."""
    await start_daemon(retrieval={"min_score": 0.0})
    agents = {h: await mesh_agent(h) for h in ("alice", "bob")}
    ids = []
    for handle, when, text in TURNS:
        payload = {"event": "utterance", "speaker": handle.title(), "text": text, "occurred_at": when}
        reply = await agents[handle].request("memory", json.dumps(payload), content_type="application/json",
                                             trace_id="chat-1", timeout=30)
        ids.append(json.loads(reply.payload)["id"])
    return await mesh_agent("asker"), ids


async def test_as_of_is_the_now_of_relative_phrases(chat) -> None:  # type: ignore[no-untyped-def]
    asker, ids = chat
    today = await ask(asker, query="cello lessons last year", mode="search")
    assert today["window"] == {"since": "2025-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    assert today["events"] == []  # "last year" read from the real now hides 2023
    replay = await ask(asker, query="cello lessons last year", mode="search", as_of="2024-03-01T00:00:00Z")
    assert replay["window"] == {"since": "2023-01-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}
    assert [e["id"] for e in replay["events"]][:1] == [ids[1]]
    assert ids[3] not in {e["id"] for e in replay["events"]}  # 2024: outside the window


async def test_search_mode_ranks_instead_of_filtering_by_handle(chat) -> None:  # type: ignore[no-untyped-def]
    asker, ids = chat
    auto = await ask(asker, query="What did alice say about the instrument?")
    assert {e["from_handle"] for e in auto["events"]} == {"alice"}  # the rules read "alice say" as a filter
    search = await ask(asker, query="What did alice say about the instrument?", mode="search", limit=3)
    found = [e["id"] for e in search["events"]]
    assert found[:2] == [ids[0], ids[1]]  # the question's match, then bob's answer next to it on the trace
    assert search["events"][0]["score"] > search["events"][1]["score"] > 0


async def test_search_mode_ranks_where_the_rules_would_list(chat) -> None:  # type: ignore[no-untyped-def]
    asker, ids = chat
    listed = await ask(asker, query="List everything alice reported")
    assert [e["id"] for e in listed["events"]] == [ids[0], ids[2]]  # every match, in time order
    ranked = await ask(asker, query="List everything alice reported about pottery", mode="search", limit=1)
    assert [e["id"] for e in ranked["events"]] == [ids[2]]
    filtered = await ask(asker, query="cello", mode="search", filters={"from_handle": "alice"})
    assert {e["from_handle"] for e in filtered["events"]} == {"alice"}  # structured filters still narrow


async def test_bad_mode_gets_an_error_reply(chat) -> None:  # type: ignore[no-untyped-def]
    asker, _ids = chat
    reply = await ask(asker, query="cello", mode="fuzzy")
    assert reply["status"] == "error" and '"mode"' in reply["error"]
