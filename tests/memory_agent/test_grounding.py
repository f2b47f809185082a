"""Names a question uses that no report holds as words (memory_agent.query.grounding).

Pure tests of which words are read as proper names and of the standard score; the grounding check on
a real SQLite store with vectors placed by hand (so the geometry is known); then the daemon with the
bundled MiniLM: a question about something nobody reported is answered "none", a question that names
what a report says in other words still finds it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_agent.query.grounding import MIN_SAMPLE, Grounding, standard_scores
from memory_agent.query.understand import understand
from memory_agent.store import EventStore
from memory_agent.types import NewEvent, Vocabulary

VOCABULARY = Vocabulary(events=frozenset({"rollback", "deploy", "anomaly"}),
                        services=frozenset({"checkout", "api-gateway"}), handles=frozenset({"monitor"}))


def names(question: str) -> tuple[str, ...]:
    return understand(question, now=datetime(2026, 11, 30, tzinfo=UTC), tz=UTC, vocabulary=VOCABULARY).proper_names


@pytest.mark.parametrize("question, expected", [
    ("When did the Kafka brokers lose quorum?", ("Kafka",)),
    ("What went wrong with the GraphQL federation layer?", ("GraphQL",)),
    ("Did the App Store review block our iOS build?", ("App Store", "iOS")),
    ("Who rotated the SSH host keys?", ("SSH",)),
    ("Why did websocket connections drop in Brazil?", ("Brazil",)),
    # not names: the first word of a sentence, days, months, zones, stored names, stop words
    ("Kafka rollbacks in the last 7 days?", ()),
    ("Why did production roll back on Friday?", ()),
    ("What happened between Nov 3 and Nov 5 UTC?", ()),
    ("Would Caroline like Dr. Seuss books?", ("Caroline", "Seuss")),
    ("Why did checkout roll back? The Monitor said so.", ()),
    ("Which deploys of Checkout since Monday?", ()),
    # title case or capitals carry no signal
    ("What Happened To The Kafka Cluster", ()),
    ("WHY DID KAFKA FAIL", ()),
])
def test_proper_names_are_read_from_how_a_word_is_written(question: str, expected: tuple[str, ...]) -> None:
    assert names(question) == expected


def test_the_standard_score_is_the_cosine_against_the_names_background() -> None:
    name = np.array([1.0, 0.0], dtype=np.float32)
    background = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0.5, 1.5, 50)], dtype=np.float32)
    ref = background @ name
    hits = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    z = standard_scores(name, hits, background)
    assert z[0] == pytest.approx((1.0 - ref.mean()) / ref.std(), rel=1e-5)
    assert z[1] < 0  # orthogonal to the name: below its background
    flat = np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (5, 1))
    assert standard_scores(name, hits, flat).tolist() == [np.inf, -np.inf]  # no spread: above or not


# --- the check on a real store with vectors placed by hand ----------------------------------------------

DIM = 8


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _event(n: int) -> NewEvent:
    return NewEvent(message_id=f"m-{n}", session="s", from_handle="ops", trace_id=f"t-{n}", event="anomaly",
                    service="svc", occurred_at=1.8e9 + n, received_at=1.8e9 + n, payload={"n": n}, text=f"report {n}")


@pytest.fixture
async def placed(tmp_path: Path) -> Any:
    """80 reports: #1 points along axis 0 (what the name "Kafka" embeds to below), the others scattered
    away from it, so the background of the name is low and wide."""
    store = await EventStore.open(tmp_path / "memory.sqlite3")
    rng = np.random.default_rng(7)
    vectors = [_unit(np.eye(DIM)[0] + 0.05 * rng.standard_normal(DIM))]
    for _ in range(79):
        v = rng.standard_normal(DIM)
        v[0] = -abs(v[0]) * 0.3
        vectors.append(_unit(v))
    results = await store.insert([_event(n) for n in range(80)], np.stack(vectors), model="placed")
    yield store, [r.id for r in results]
    await store.close()


async def _embed_name(text: str) -> np.ndarray | None:
    return {"Kafka": _unit(np.eye(DIM)[0]), "Frankfurt": _unit(np.eye(DIM)[1])}.get(text)


async def test_a_hit_is_kept_only_when_it_stands_out_for_the_name(placed: Any) -> None:
    store, ids = placed
    grounding = Grounding(store, _embed_name)
    result = await grounding.keep(["Kafka"], [ids[5], ids[0], ids[9]])
    assert result.kept == (ids[0],)
    assert "1 of 3 matches are about it" in result.note
    # Ranked hits: the best match decides. Not about the name -> nothing, however the rest score.
    ranked = await grounding.keep(["Kafka"], [ids[5], ids[0]], ranked=True)
    assert ranked.kept == () and "best match is not about it" in ranked.note
    assert (await grounding.keep(["Kafka"], [ids[0], ids[5]], ranked=True)).kept == (ids[0],)
    # Every name must be met: #1 is about Kafka, not about Frankfurt.
    assert (await grounding.keep(["Kafka", "Frankfurt"], [ids[0]])).kept == ()


async def test_without_the_model_nothing_is_judged_about_a_name(placed: Any) -> None:
    store, ids = placed

    async def no_model(text: str) -> np.ndarray | None:
        return None

    result = await Grounding(store, no_model).keep(["Kafka"], [ids[0]])
    assert result.kept == () and "model is not loaded" in result.note


async def test_too_few_reports_to_judge_keeps_the_hits(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "small.sqlite3")
    try:
        few = MIN_SAMPLE - 1
        vectors = np.stack([_unit(np.random.default_rng(n).standard_normal(DIM)) for n in range(few)])
        ids = [r.id for r in await store.insert([_event(n) for n in range(few)], vectors, model="placed")]
        result = await Grounding(store, _embed_name).keep(["Kafka"], ids[:3])
        assert result.kept == tuple(ids[:3]) and "too few embedded reports" in result.note
    finally:
        await store.close()


async def test_the_background_is_drawn_again_as_the_store_grows(placed: Any) -> None:
    store, ids = placed
    grounding = Grounding(store, _embed_name, sample=64)
    await grounding.keep(["Kafka"], [ids[0]])
    first = grounding._background
    assert first is not None and len(first) == 64
    await grounding.keep(["Kafka"], [ids[0]])
    assert grounding._background is first  # unchanged store: the same sample
    more = np.stack([_unit(np.random.default_rng(100 + n).standard_normal(DIM)) for n in range(40)])
    await store.insert([_event(100 + n) for n in range(40)], more, model="placed")
    await grounding.keep(["Kafka"], [ids[0]])
    assert grounding._background is not first


# --- the daemon with the bundled MiniLM ------------------------------------------------------------------

OPS = [
    ("checkout", "conversion dropped 30% in EU, cart page shows no shipping options"),
    ("recommendations", "resident memory grows without bound until the OOM killer ends the pod"),
    ("ledger", "p99 on POST /charge jumped from 180 ms to 2.4 s, timeouts piling up"),
    ("auth", "token validation failures at 12%: token used before issued"),
    ("api-gateway", "errors at 8% since the load balancer swap"),
    ("inventory", "primary database at full CPU, replica lag 45 seconds"),
    ("billing-worker", "invoice consumers 1.2 million messages behind"),
    ("notifications", "outbound QPS to the SMS provider 15x normal, provider returning 429"),
    ("search-indexer", "stop-the-world GC pauses of 4-6 s, indexing throughput down 70%"),
    ("edge-proxy", "TLS handshake failures for about 40% of clients"),
]
KINDS = ["deployed a new build", "rolled back the last release", "raised the replica count",
         "rotated the service credentials", "quarantined a flaky integration test", "changed the log level"]


async def test_something_nobody_reported_is_answered_none_and_a_paraphrase_still_found(  # type: ignore[no-untyped-def]
        start_daemon, mesh_agent, tmp_path) -> None:
    from memory_agent.config import EmbeddingConfig
    from memory_agent.embedding.base import load_embedder

    embedder = await asyncio.to_thread(load_embedder, EmbeddingConfig(), data_dir=tmp_path / "model")
    daemon = await start_daemon(embedder=embedder)
    reporter = await mesh_agent("ops")
    reports: list[dict[str, Any]] = [
        {"event": "anomaly", "service": service, "summary": summary, "trace_id": f"t-{n}"}
        for n, (service, summary) in enumerate(OPS)
    ]
    reports += [{"event": "deploy", "service": service, "summary": f"{kind} of {service}",
                 "trace_id": f"r-{service}-{k}"} for service, _ in OPS for k, kind in enumerate(KINDS)]
    for payload in reports:  # 70 reports: enough for a background of the names
        reply = await reporter.request("memory", json.dumps(payload), content_type="application/json", timeout=60)
        assert json.loads(reply.payload)["status"] == "stored"
    await daemon.wait_embedded(timeout=120)  # acknowledged on commit, embedded behind
    asker = await mesh_agent("asker")

    async def ask(question: str) -> dict[str, Any]:
        body = json.dumps({"query": question, "limit": 10})
        reply = await asker.request("memory", body, content_type="application/json", timeout=60)
        return dict(json.loads(reply.payload))

    nobody = await ask("When did the Kafka brokers lose quorum?")
    assert nobody["events"] == [], nobody["answer"]
    assert nobody["answer"].startswith("No report mentions 'Kafka'")
    assert any(note.startswith("'Kafka': no report holds it as words") for note in nobody["notes"])
    # A list or count narrowed by stored names keeps only events about the unknown one too.
    counted = await ask("How many anomalies did the Kafka cluster have?")
    assert counted["intent"] == "count" and counted["filters"] == {"event": ["anomaly"]}
    assert counted["total"] == 0 and counted["events"] == [], counted["answer"]
    assert counted["answer"].startswith("No report mentions 'Kafka'")
    found = await ask("Which workload kept swallowing RAM until it got terminated again and again?")
    assert found["events"], found["answer"]
    assert found["events"][0]["payload"]["service"] == "recommendations", found["answer"]
    assert any("'RAM'" in note and "about it by meaning" in note for note in found["notes"])
