"""Calibrated fusion and the relevance floor: pure tests of the scores, then answers on a real daemon.

The daemon tests use the small hashing embedder with the floor at its default; what they check is that
an answer with nothing above the floor says so instead of listing what is stored, and that the text
shows the best few and how many more matched.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from memory_agent.query.render import MAX_LINE_CHARS, TEXT_BUDGET, Budget, event_line, plural, window_in_words
from memory_agent.query.retrieval import calibrated_fusion
from memory_agent.store.lexical import LexicalHits, bm25_idf
from memory_agent.types import StoredEvent, TimeWindow
from mesh import AsyncAgent
from mesh.constants import DEFAULT_MAX_PAYLOAD
from tests.conftest import NOW

# --- pure: scores ---------------------------------------------------------------------------------------


def test_calibrated_scores_are_bounded_and_mean_the_same_for_every_question() -> None:
    lexical = LexicalHits(hits=[(1, 12.0), (2, 3.0)], phrases=4, bound=10.0, matched={1: 4, 2: 1})
    fused = {h.id: h.score for h in calibrated_fusion([(1, 0.6), (3, 0.5)], lexical, dense_weight=0.3,
                                                       coverage_power=2.0)}
    assert fused[1] == pytest.approx(0.3 * 0.6 + 0.7 * 1.0)  # BM25 over its bound, capped at 1; all 4 words
    assert fused[2] == pytest.approx(0.7 * 0.3 * (1 / 4) ** 2)  # one of four words: its share squared
    assert fused[3] == pytest.approx(0.3 * 0.5)
    assert all(0.0 <= s <= 1.0 for s in fused.values())
    # Min-max normalisation would have made the weak best hit of a question look as good as any other.
    weak = calibrated_fusion([(7, 0.2)], LexicalHits([], 3, 9.0, {}), dense_weight=0.3, coverage_power=2.0)
    assert weak[0].score == pytest.approx(0.06)


def test_one_incidental_shared_word_does_not_outvote_a_clear_semantic_match() -> None:
    # A paraphrase: report 1 is its meaning (cosine 0.55) and shares no word; report 2 shares one rare
    # word of the question's five by accident.
    lexical = LexicalHits(hits=[(2, 4.0)], phrases=5, bound=15.0, matched={2: 1})
    ranked = calibrated_fusion([(1, 0.55), (2, 0.20)], lexical, dense_weight=0.3, coverage_power=2.0)
    assert [h.id for h in ranked] == [1, 2]


def test_bm25_idf_is_fts5s() -> None:
    assert bm25_idf(1, 1000) == pytest.approx(6.5017, abs=1e-3)  # ln((1000 - 1 + 0.5) / 1.5)
    assert bm25_idf(900, 1000) == pytest.approx(1e-6)  # floored, as in fts5_aux.c


# --- pure: text bounds ------------------------------------------------------------------------------------


def _event(payload: dict[str, Any], event_id: int = 1) -> StoredEvent:
    return StoredEvent(message_id="m", session="s", from_handle="deploy", trace_id="t-81", event="rollback",
                       service=None, occurred_at=NOW, received_at=NOW, payload=payload, text="", id=event_id)


def test_an_event_line_is_bounded_and_says_how_many_fields_were_cut() -> None:
    huge = {f"field_{i}": "x" * 50 for i in range(67_000)}
    line = event_line(_event({"event": "rollback", **huge}), tz=__import__("zoneinfo").ZoneInfo("UTC"))
    assert len(line) <= MAX_LINE_CHARS
    assert line.startswith("- [#1] ") and line.endswith(", trace t-81")
    assert "more fields" in line


def test_a_text_answer_stays_within_one_mesh_message_and_says_what_it_left_out() -> None:
    budget = Budget()
    for _ in range(2_000):
        budget.add("- " + "y" * (MAX_LINE_CHARS - 2))
    text = budget.text()
    assert len(text.encode()) <= DEFAULT_MAX_PAYLOAD and TEXT_BUDGET < DEFAULT_MAX_PAYLOAD
    assert budget.left_out > 0 and f"{budget.left_out} more events not shown" in text


def test_plurals_of_the_words_answers_count() -> None:
    assert [plural(n, "match") for n in (0, 1, 2)] == ["matches", "match", "matches"]
    assert (plural(1, "event"), plural(3, "event"), plural(2, "field")) == ("event", "events", "fields")


def test_the_window_in_words_with_its_zone() -> None:
    from zoneinfo import ZoneInfo

    monday = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    now = monday + 3 * 86_400 + 15.5 * 3600
    week = TimeWindow(since=monday, until=monday + 7 * 86_400)
    assert window_in_words(week, "this week", tz=ZoneInfo("UTC"), now=now) == "this week (Mon 23 Nov 00:00 \u2013 now, UTC)"
    past = TimeWindow(since=monday - 7 * 86_400, until=monday)
    assert window_in_words(past, None, tz=ZoneInfo("Europe/Berlin"), now=now) == (
        "between Mon 16 Nov 01:00 and Mon 23 Nov 01:00 (Europe/Berlin)"
    )


# --- the daemon -------------------------------------------------------------------------------------------

REPORTS = [
    ("deploy", {"event": "rollback", "service": "api-gateway", "reason": "error rate spike after deploy",
                "trace_id": "t-81", "occurred_at": "2026-11-20T14:05:00Z"}),
    ("monitor", {"event": "anomaly", "service": "api-gateway", "summary": "5xx rate jumped to 12%",
                 "trace_id": "t-81", "occurred_at": "2026-11-20T14:00:00Z"}),
    *[("deploy", {"event": "deploy", "service": f"svc-{i}", "summary": f"shipped build {i} of the search service",
                  "trace_id": f"rel-{i}", "occurred_at": f"2026-11-1{i % 9}T10:00:00Z"}) for i in range(9)],
]


async def _ask(agent: AsyncAgent, body: dict[str, Any] | str) -> Any:
    if isinstance(body, str):
        reply = await agent.request("memory", body, content_type="text/plain", timeout=30)
        return reply.payload
    reply = await agent.request("memory", json.dumps(body), content_type="application/json", timeout=30)
    return json.loads(reply.payload)


@pytest.fixture
async def seeded(start_daemon, mesh_agent):  # type: ignore[no-untyped-def]
    await start_daemon()
    agents = {h: await mesh_agent(h) for h in ("deploy", "monitor")}
    for handle, payload in REPORTS:
        reply = await agents[handle].request("memory", json.dumps(payload), content_type="application/json",
                                             timeout=30)
        assert json.loads(reply.payload)["status"] == "stored"
    return await mesh_agent("asker")


async def test_nothing_above_the_floor_is_answered_as_nothing(seeded) -> None:  # type: ignore[no-untyped-def]
    plain = await _ask(seeded, "Which recipes use saffron and cardamom?")
    assert plain.startswith("No reports match")
    structured = await _ask(seeded, {"query": "Which recipes use saffron and cardamom?"})
    assert structured["events"] == [] and structured["total"] == 0
    assert any("relevance floor" in note for note in structured["notes"])


async def test_plain_text_shows_the_best_few_and_how_many_more(seeded) -> None:  # type: ignore[no-untyped-def]
    question = "shipped build of the search service"
    text = await _ask(seeded, question)
    lines = [line for line in text.splitlines() if line.startswith("- [#")]
    assert len(lines) == 5  # [retrieval] text_limit
    assert "more reports matched" in text
    limited = await _ask(seeded, {"query": question, "limit": 2})
    assert len(limited["events"]) == 2 and limited["more"] >= 7
    assert len([line for line in limited["answer"].splitlines() if line.startswith("- [#")]) == 2


async def test_unknown_trace_is_never_answered_with_another(seeded) -> None:  # type: ignore[no-untyped-def]
    answer = await _ask(seeded, {"query": "Give me the timeline of t-82"})
    assert answer["events"] == [] and answer["intent"] == "timeline"
    assert answer["answer"].startswith("No reports carry trace t-82.") and "t-81" in answer["answer"]  # near
    why = await _ask(seeded, "Why did rel-7777 roll back?")
    # The near match is the stored id sharing its longest prefix (rel-7), and no event of it is listed.
    assert why.startswith("No reports carry trace rel-7777.") and "look like it: rel-7." in why
    assert "- [#" not in why


async def test_answers_say_how_they_read_the_question(seeded) -> None:  # type: ignore[no-untyped-def]
    answer = await _ask(seeded, {"query": "What rollbacks happened in the last 7 days?", "as_of": "2026-11-21T10:00:00Z"})
    assert answer["intent"] == "list" and answer["filters"] == {"event": ["rollback"]}
    assert answer["answer"].startswith(
        "1 event of type rollback in the last 7 days (Sat 14 Nov 10:00 \u2013 now, UTC):")
    assert any(note.startswith("event=rollback") for note in answer["notes"])



async def test_why_answers_the_explained_incident_and_names_the_others(seeded, mesh_agent) -> None:  # type: ignore[no-untyped-def]
    # A later rollback of the same service whose trace holds nothing else: the why answer still takes
    # t-81's, whose trace holds the anomaly before it, and names the other candidate.
    deploy = await mesh_agent("deploy-2")
    late = {"event": "rollback", "service": "api-gateway", "reason": "manual rollback of a bad flag",
            "trace_id": "t-90", "occurred_at": "2026-11-20T18:00:00Z"}
    stored = json.loads((await deploy.request("memory", json.dumps(late), content_type="application/json",
                                              timeout=30)).payload)
    assert stored["status"] == "stored"
    answer = await _ask(seeded, {"query": "Why did api-gateway roll back?", "as_of": "2026-11-21T10:00:00Z"})
    assert answer["intent"] == "why"
    assert answer["events"][0]["trace_id"] == "t-81" and answer["events"][0]["event"] == "rollback"
    assert answer["events"][1]["event"] == "anomaly"  # what explains it comes next
    assert "its trace shows what went wrong before it" in answer["answer"]
    assert "1 other match" in answer["answer"] and f"#{stored['id']}" in answer["answer"]
    assert any(note.startswith("why: chose #") for note in answer["notes"])


async def test_why_weighs_every_match_holding_the_questions_words_not_only_the_best_scored(  # type: ignore[no-untyped-def]
    seeded, mesh_agent
) -> None:
    # Two production rollbacks: the later one is short and repeats "production", so it scores far higher
    # (BM25 favours it: term frequency, length normalisation); its trace holds nothing else. The earlier
    # one says "production" once in a long report and its trace holds the anomaly before it. Both hold
    # the question's word, so both are candidates and the explained one is the answer.
    agent = await mesh_agent("deploy-3")
    sent = [
        {"event": "anomaly", "service": "checkout", "summary": "checkout error ratio at 9%", "trace_id": "t-70",
         "occurred_at": "2026-11-20T09:00:00Z"},
        {"event": "rollback", "service": "checkout", "env": "production", "trace_id": "t-70",
         "reason": "reverted build 812, whose release bundled cart, tax, promotions, search, recommendations "
                   "and storefront changes, three schema migrations and a refresh of forty dependencies",
         "occurred_at": "2026-11-20T09:10:00Z"},
        {"event": "rollback", "service": "ledger", "env": "production",
         "reason": "production flag flipped in production, production rollback", "trace_id": "t-91",
         "occurred_at": "2026-11-20T19:00:00Z"},
    ]
    for payload in sent:
        reply = await agent.request("memory", json.dumps(payload), content_type="application/json", timeout=30)
        assert json.loads(reply.payload)["status"] == "stored"
    answer = await _ask(seeded, {"query": "Why did production roll back?", "as_of": "2026-11-21T10:00:00Z"})
    assert answer["intent"] == "why"
    assert answer["events"][0]["trace_id"] == "t-70" and answer["events"][0]["event"] == "rollback"
    assert "its trace shows what went wrong before it" in answer["answer"]
    assert "t-91" in answer["answer"]  # named among the other candidates


@pytest.mark.parametrize("floor, found", [(0.0, True), (1.0, False)])
async def test_the_floor_decides_what_is_presented(start_daemon, mesh_agent, floor: float,  # type: ignore[no-untyped-def]
                                                   found: bool) -> None:
    await start_daemon(retrieval={"min_score": floor})
    deploy = await mesh_agent("deploy")
    for _, payload in REPORTS[2:5]:
        await deploy.request("memory", json.dumps(payload), content_type="application/json", timeout=30)
    asker = await mesh_agent("asker")
    answer = await _ask(asker, {"query": "shipped build of the search service"})
    assert bool(answer["events"]) is found
    assert all(e["score"] >= floor for e in answer["events"])
    if not found:
        assert answer["answer"].startswith("No reports match") and answer["total"] == 0


# --- the daemon with the real model: a paraphrase beats an incidental shared word --------------------------

PARAPHRASE_REPORTS = [
    {"event": "config_change", "service": "web", "summary": "TLS certificate renewed, expiry moved to March",
     "trace_id": "t-301"},
    {"event": "deploy", "service": "search", "summary": "shipped build 41: faster autocomplete", "trace_id": "t-302"},
    {"event": "incident_opened", "service": "storage", "summary": "disk on db-3 is 97% full", "trace_id": "t-303"},
    # Decoys: each shares one word of a question below and means something else.
    {"event": "deploy", "service": "web", "summary": "replaced the login page banner", "trace_id": "t-304"},
    {"event": "anomaly", "service": "search", "summary": "suggestions endpoint returned stale results for an hour",
     "trace_id": "t-305"},
]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("question, gold", [
    ("When was the SSL cert replaced?", "t-301"),  # "replaced" is the decoy's word only
    ("What made typeahead suggestions quicker?", "t-302"),  # "suggestions" likewise
])
async def test_a_paraphrase_ranks_its_report_above_an_incidental_shared_word(  # type: ignore[no-untyped-def]
        start_daemon, mesh_agent, tmp_path, question: str, gold: str) -> None:
    import asyncio

    from memory_agent.config import EmbeddingConfig
    from memory_agent.embedding.base import load_embedder

    embedder = await asyncio.to_thread(load_embedder, EmbeddingConfig(), data_dir=tmp_path / "model")
    daemon = await start_daemon(embedder=embedder)
    reporter = await mesh_agent("ops")
    for payload in PARAPHRASE_REPORTS:
        reply = await reporter.request("memory", json.dumps(payload), content_type="application/json", timeout=60)
        assert json.loads(reply.payload)["status"] == "stored"
    await daemon.wait_embedded(timeout=120)  # acknowledged on commit, embedded behind
    asker = await mesh_agent("asker")
    answer = await _ask(asker, {"query": question, "mode": "search"})
    assert answer["events"], answer["answer"]
    assert answer["events"][0]["trace_id"] == gold
