"""EventStore against real SQLite files in tmp_path (FTS5, WAL, migrations)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_agent.embedding.hashing import HashingEmbedder
from memory_agent.errors import ConfigError
from memory_agent.store import EventStore, fts_query
from memory_agent.store.schema import SCHEMA_VERSION, migrate
from memory_agent.types import Filters, NewEvent, TimeWindow

pytestmark = pytest.mark.timeout(60)

EMB = HashingEmbedder(32)
MODEL = EMB.name
T0 = 1_700_000_000.0


def make_event(
    n: int,
    *,
    text: str | None = None,
    event: str = "deploy",
    service: str | None = "api-gateway",
    handle: str = "@ci",
    trace: str | None = None,
    at: float | None = None,
    message_id: str | None = None,
) -> NewEvent:
    return NewEvent(
        message_id=message_id or f"m-{n}",
        session="s-1",
        from_handle=handle,
        trace_id=trace or f"t-{n}",
        event=event,
        service=service,
        occurred_at=T0 + n * 60 if at is None else at,
        received_at=T0 + n * 60 + 1,
        payload={"n": n, "service": service, "note": "ünïcode ok"},
        text=text or f"{event} of {service} number {n}",
    )


async def put(store: EventStore, events: list[NewEvent]) -> list[int]:
    results = await store.insert(events, EMB.encode([e.text for e in events]), model=MODEL)
    return [r.id for r in results]


@pytest.fixture
async def store(tmp_path: Path):
    s = await EventStore.open(tmp_path / "db" / "memory.sqlite3")
    yield s
    await s.close()


async def test_open_creates_dirs_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "memory.sqlite3"
    s = await EventStore.open(path)
    await s.close()
    await s.close()  # idempotent
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"events", "events_fts", "events_occurred_at_received", "events_trace_occurred_at"} <= names
    assert {"events_event_occurred_at", "events_from_handle_occurred_at", "events_service_occurred_at"} <= names
    assert not {"events_from_handle", "events_service", "events_occurred_at"} & names  # replaced by migration 5
    assert "events_occurred_at_columns" not in names  # replaced by migration 9 (with received_at)


async def test_old_version_db_is_migrated_and_reopen_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    assert migrate(path, target=1) == (0, 1)
    conn = sqlite3.connect(path)
    vec = EMB.encode(["rollback of billing"])[0].tobytes()
    conn.execute(
        "INSERT INTO events (message_id, session, from_handle, trace_id, event, service, occurred_at, "
        "received_at, payload, text, embedding, embedding_model, embedding_dim) "
        "VALUES ('old-1', 's', '@ci', 't', 'rollback', 'billing', ?, ?, '{}', 'rollback of billing', ?, ?, 32)",
        (T0, T0, vec, MODEL),
    )
    conn.commit()
    conn.close()

    s = await EventStore.open(path)
    try:
        # The FTS table did not exist at version 1; migration 2 indexed the old row.
        hits = await s.fts_search("rollbacks", None, Filters(), limit=5)
        assert [h[0] for h in hits] == [1]
        assert (await s.find_message("@ci", "old-1")) == 1
    finally:
        await s.close()
    assert migrate(path) == (SCHEMA_VERSION, SCHEMA_VERSION)
    s = await EventStore.open(path)
    assert await s.count(None, Filters()) == 1
    await s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_newer_or_foreign_file_is_a_config_error(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        await EventStore.open(newer)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ConfigError, match="SQLite"):
        await EventStore.open(junk)


async def test_insert_and_duplicates_stored_once(store: EventStore) -> None:
    first = await store.insert([make_event(1), make_event(2)], EMB.encode(["a", "b"]), model=MODEL)
    assert [r.duplicate for r in first] == [False, False]
    assert first[0].id != first[1].id
    assert await store.find_message("@ci", "m-1") == first[0].id
    assert await store.find_message("@ci", "nope") is None
    assert await store.find_message("@other", "m-1") is None

    batch = [make_event(3), make_event(1), make_event(3, text="other text"), make_event(4)]
    second = await store.insert(batch, EMB.encode([e.text for e in batch]), model=MODEL)
    assert second[1].id == first[0].id and second[1].duplicate
    assert not second[0].duplicate
    assert second[2].id == second[0].id and second[2].duplicate
    assert not second[3].duplicate
    assert await store.count(None, Filters()) == 4
    stored = await store.get([second[0].id])
    assert stored[0].text == "deploy of api-gateway number 3"  # the first of the batch won
    assert stored[0].payload == {"n": 3, "service": "api-gateway", "note": "ünïcode ok"}


async def test_a_message_id_is_unique_per_sender_not_across_senders(store: EventStore) -> None:
    """The mesh scopes a message id by its sender (docs/mesh.md, "Exactly once"): two agents that choose
    the same id send two reports; each sender's redelivery is still one."""
    batch = [make_event(1, handle="@deploy", message_id="daily-1"), make_event(2, handle="@canary", message_id="daily-1"),
             make_event(3, handle="@canary", message_id="daily-1")]
    results = await store.insert(batch, EMB.encode([e.text for e in batch]), model=MODEL)
    assert [r.duplicate for r in results] == [False, False, True]
    assert results[0].id != results[1].id == results[2].id
    again = await store.insert([make_event(4, handle="@deploy", message_id="daily-1")])
    assert again[0].duplicate and again[0].id == results[0].id
    assert await store.find_message("@deploy", "daily-1") == results[0].id
    assert await store.find_message("@canary", "daily-1") == results[1].id
    assert await store.find_messages([("@canary", "daily-1"), ("@ops", "daily-1"), ("@deploy", "x")]) == {
        ("@canary", "daily-1"): results[1].id}
    assert [e.from_handle for e in await store.get([results[0].id, results[1].id])] == ["@deploy", "@canary"]


async def test_migration_10_keeps_every_row_id_and_the_id_counter(tmp_path: Path) -> None:
    """A version-9 store (message_id unique across senders) becomes unique per sender: rows, ids, the FTS5
    index and the AUTOINCREMENT counter (past a deleted last row) are untouched, and the file is sound."""
    path = tmp_path / "v9.sqlite3"
    assert migrate(path, target=9) == (0, 9)
    conn = sqlite3.connect(path)
    for n, text in ((1, "rollback of billing"), (2, "flaky test in checkout"), (3, "deleted last row")):
        conn.execute(
            "INSERT INTO events (message_id, session, from_handle, trace_id, event, service, occurred_at, "
            "received_at, payload, text) VALUES (?, 's', '@ci', ?, 'rollback', 'billing', ?, ?, '{}', ?)",
            (f"m-{n}", f"t-{n}", T0 + n, T0 + n, text))
    conn.execute("DELETE FROM events WHERE id = 3")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError):  # version 9: another sender may not reuse the id
        conn.execute("INSERT INTO events (message_id, session, from_handle, trace_id, event, occurred_at, "
                     "received_at, payload, text) VALUES ('m-1', 's', '@other', 't', 'x', 0, 0, '{}', 'x')")
    conn.close()

    assert migrate(path) == (9, SCHEMA_VERSION)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()[0] == 3
        indexes = {r[0]: r[1] for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'events' "
                                                     "AND type = 'index'")}
        assert "sqlite_autoindex_events_1" not in indexes and "events_message_id_v9" not in indexes
        assert indexes["events_message_sender"] == (
            "CREATE UNIQUE INDEX events_message_sender ON events (message_id, from_handle)")
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")} == {
            "events_fts_ai", "events_fts_ad", "events_fts_au"}
    finally:
        conn.close()
    s = await EventStore.open(path)
    try:
        assert [(e.id, e.message_id, e.text) for e in await s.get([1, 2])] == [
            (1, "m-1", "rollback of billing"), (2, "m-2", "flaky test in checkout")]
        assert [h[0] for h in await s.fts_search("checkout flakiness", None, Filters(), limit=5)] == [2]
        other, again = await s.insert([make_event(9, handle="@other", message_id="m-1"),
                                       make_event(9, handle="@ci", message_id="m-1")])
        assert not other.duplicate and other.id == 4  # above the deleted row's id: ids are never reused
        assert again.duplicate and again.id == 1
        assert [h[0] for h in await s.fts_search("number 9", None, Filters(), limit=5)] == [4]  # the trigger is back
    finally:
        await s.close()


async def test_insert_rejects_wrong_vector_count_and_writes_nothing(store: EventStore) -> None:
    with pytest.raises(ValueError):
        await store.insert([make_event(1), make_event(2)], EMB.encode(["only one"]), model=MODEL)
    assert await store.count(None, Filters()) == 0
    assert await store.insert([], np.zeros((0, 32), dtype=np.float32), model=MODEL) == []


async def test_concurrent_inserts_do_not_collide(store: EventStore) -> None:
    batches = [[make_event(i * 10 + j) for j in range(5)] for i in range(8)]
    await asyncio.gather(*(put(store, b) for b in batches))
    assert await store.count(None, Filters()) == 40


async def test_get_keeps_order_and_skips_missing(store: EventStore) -> None:
    ids = await put(store, [make_event(i) for i in range(5)])
    got = await store.get([ids[3], 9999, ids[0], ids[3]])
    assert [e.id for e in got] == [ids[3], ids[0], ids[3]]
    assert got[0].message_id == "m-3" and got[0].occurred_at == T0 + 180


async def test_window_is_half_open_and_filters_apply_everywhere(store: EventStore) -> None:
    events = [
        make_event(0, event="deploy", service="api-gateway", handle="@ci", trace="t-a"),
        make_event(1, event="rollback", service="api-gateway", handle="@ci", trace="t-a"),
        make_event(2, event="rollback", service="billing", handle="@ops", trace="t-b"),
        make_event(3, event="deploy", service=None, handle="@ops", trace="t-b"),
        make_event(4, event="rollback", service="api-gateway", handle="@ops", trace="t-c"),
    ]
    ids = await put(store, events)
    window = TimeWindow(since=T0 + 60, until=T0 + 240)  # minutes 1, 2, 3 (4 is excluded: half-open)
    everything = Filters()

    sel = await store.select(window, everything)
    assert [e.id for e in sel] == ids[1:4]
    assert await store.count(window, everything) == 3
    cand = await store.candidate_ids(window, everything)
    assert cand is not None and cand.dtype == np.int64 and cand.tolist() == ids[1:4]

    rollbacks = Filters(event=("rollback",))
    assert [e.id for e in await store.select(window, rollbacks)] == [ids[1], ids[2]]
    assert await store.count(None, rollbacks) == 3
    both = Filters(event=("rollback",), service=("api-gateway",))
    assert [e.id for e in await store.select(None, both)] == [ids[1], ids[4]]
    assert [e.id for e in await store.select(None, Filters(service=("billing", "api-gateway")))] == [
        ids[0],
        ids[1],
        ids[2],
        ids[4],
    ]
    ops = await store.candidate_ids(None, Filters(from_handle=("@ops",)))
    assert ops is not None and ops.tolist() == ids[2:]
    trace_b = await store.candidate_ids(None, Filters(trace_id=("t-b",)))
    assert trace_b is not None and trace_b.tolist() == [ids[2], ids[3]]
    assert await store.candidate_ids(None, Filters()) is None
    empty = await store.candidate_ids(TimeWindow(since=T0 + 10_000), everything)
    assert empty is not None and len(empty) == 0

    assert [e.id for e in await store.select(TimeWindow(until=T0 + 60), everything)] == [ids[0]]
    desc = await store.select(None, everything, order="desc", limit=2)
    assert [e.id for e in desc] == [ids[4], ids[3]]

    hits = await store.fts_search("rollback", window, everything, limit=10)
    assert {h[0] for h in hits} == {ids[1], ids[2]}
    hits = await store.fts_search("rollback", None, Filters(service=("api-gateway",)), limit=10)
    assert {h[0] for h in hits} == {ids[1], ids[4]}
    hits = await store.fts_search("rollback", TimeWindow(since=T0 + 240), Filters(), limit=10)
    assert [h[0] for h in hits] == [ids[4]]


async def test_fts_porter_stemming_and_bm25_order(store: EventStore) -> None:
    ids = await put(
        store,
        [
            make_event(0, text="rollback of api-gateway after failed deploy"),
            make_event(1, text="flaky test quarantined in payments"),
            make_event(2, text="rollback rollback: billing rolled back twice"),
            make_event(3, text="deployed billing v2 with deploys of workers"),
        ],
    )
    hits = await store.fts_search("rollbacks", None, Filters(), limit=10)
    assert [h[0] for h in hits] == [ids[2], ids[0]]  # more occurrences of the term rank first
    assert hits[0][1] > hits[1][1] > 0  # score = -bm25: higher is better
    assert {h[0] for h in await store.fts_search("deploying", None, Filters(), limit=10)} == {ids[0], ids[3]}
    assert [h[0] for h in await store.fts_search("quarantine", None, Filters(), limit=10)] == [ids[1]]
    # Hyphenated names are searched as a phrase.
    assert [h[0] for h in await store.fts_search("api-gateway", None, Filters(), limit=10)] == [ids[0]]
    assert len(await store.fts_search("rollback", None, Filters(), limit=1)) == 1


NASTY = [
    "",
    "   ",
    '"AND OR NEAR( * ^"',
    "AND",
    "OR OR OR",
    "NOT rollback",
    "NEAR(rollback deploy, 2)",
    'rollback" OR "x',
    "roll*",
    "^rollback",
    "text:rollback",
    "{text}: rollback",
    "rollback -deploy",
    "(((",
    "'; DROP TABLE events; --",
    "the of and what when",
    "_ __ ___",
    "émoji 🚀 rollback ünïcode",
    "\x00\x01 rollback",
    "a" * 5000,
]


async def test_fts_syntax_in_questions_never_raises(store: EventStore) -> None:
    ids = await put(store, [make_event(0, text="rollback of api-gateway")])
    for text in NASTY:
        hits = await store.fts_search(text, None, Filters(), limit=5)
        assert all(h[0] in ids for h in hits)
    assert await store.fts_search("", None, Filters(), limit=5) == []
    assert await store.fts_search("what was the", None, Filters(), limit=5) == []
    found = await store.fts_search('NOT "rollback" AND NEAR(', None, Filters(), limit=5)
    assert [h[0] for h in found] == ids


def test_fts_query_shape() -> None:
    assert (
        fts_query("What rollbacks of api-gateway happened?") == '"rollbacks" OR "api gateway" OR "happened"'
    )
    assert fts_query('"AND OR NEAR( * ^"') == '"near"'
    assert fts_query("the and of") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fts_query_is_always_valid_fts5(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE f USING fts5(text, tokenize='porter unicode61')")
        conn.execute("INSERT INTO f (text) VALUES ('rollback of api-gateway')")
        query = fts_query(text)
        if query is not None:
            conn.execute("SELECT rowid, bm25(f) FROM f WHERE f MATCH ?", (query,)).fetchall()
    finally:
        conn.close()


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite3"
    s = await EventStore.open(path)
    events = [make_event(i, text=f"rollback number {i}") for i in range(3)]
    vectors = EMB.encode([e.text for e in events])
    ids = [r.id for r in await s.insert(events, vectors, model=MODEL)]
    await s.close()

    s = await EventStore.open(path)
    try:
        got = await s.get(ids)
        assert [(e.message_id, e.text, e.payload) for e in got] == [
            (e.message_id, e.text, e.payload) for e in events
        ]
        assert {h[0] for h in await s.fts_search("rollbacks", None, Filters(), limit=10)} == set(ids)
        chunks = [c async for c in s.iter_vectors()]
        assert np.array_equal(chunks[0][1], vectors) and chunks[0][0].tolist() == ids
        more = await put(s, [make_event(3), make_event(0)])
        assert more[0] > max(ids) and more[1] == ids[0]
    finally:
        await s.close()


async def test_iter_vectors_batches_and_model_filter(store: EventStore) -> None:
    events = [make_event(i) for i in range(7)]
    vectors = EMB.encode([e.text for e in events])
    ids = [r.id for r in await store.insert(events, vectors, model=MODEL)]
    chunks = [c async for c in store.iter_vectors(batch=3)]
    assert [len(c[0]) for c in chunks] == [3, 3, 1]
    all_ids = np.concatenate([c[0] for c in chunks])
    all_vecs = np.concatenate([c[1] for c in chunks])
    assert all_ids.dtype == np.int64 and all_vecs.dtype == np.float32
    assert all_ids.tolist() == ids and np.array_equal(all_vecs, vectors)
    assert [c async for c in store.iter_vectors(model="other")] == []


async def test_update_vectors_changes_model(store: EventStore) -> None:
    ids = await put(store, [make_event(i) for i in range(4)])
    models = await store.vector_models()
    assert [(m.model, m.dim, m.count) for m in models] == [(MODEL, 32, 4)]
    other = HashingEmbedder(16, name="other-16")
    new = other.encode(["x", "y"])
    assert await store.update_vectors([ids[0], ids[2], 999], np.vstack([new, new[:1]]), model="other-16") == 2
    models = await store.vector_models()
    assert {(m.model, m.dim, m.count) for m in models} == {(MODEL, 32, 2), ("other-16", 16, 2)}
    got = [c async for c in store.iter_vectors(model="other-16")]
    assert got[0][0].tolist() == [ids[0], ids[2]] and np.array_equal(got[0][1], new)


async def test_iter_texts_pages_while_vectors_are_rewritten(store: EventStore) -> None:
    events = [make_event(i) for i in range(5)]
    ids = await put(store, events)
    other = HashingEmbedder(16, name="other-16")
    seen: list[int] = []
    async for chunk_ids, texts in store.iter_texts(batch=2):
        assert texts == [events[ids.index(int(i))].text for i in chunk_ids]
        await store.update_vectors(chunk_ids.tolist(), other.encode(texts), model=other.name)
        seen += chunk_ids.tolist()
    assert seen == ids
    assert [(m.model, m.count) for m in await store.vector_models()] == [("other-16", 5)]


async def test_vocabulary_stats_and_delete(store: EventStore) -> None:
    stats = await store.stats()
    assert stats.count == 0 and stats.max_id == 0 and stats.first_occurred_at is None and stats.models == ()
    ids = await put(
        store,
        [
            make_event(0, event="deploy", service="api-gateway", handle="@ci", text="rollback one"),
            make_event(1, event="rollback", service=None, handle="@ops", text="rollback two"),
            make_event(2, event="test_failed", service="billing", handle="@ci", text="tests red"),
        ],
    )
    vocab = await store.vocabulary()
    assert vocab.events == {"deploy", "rollback", "test_failed"}
    assert vocab.services == {"api-gateway", "billing"}
    assert vocab.handles == {"@ci", "@ops"}
    stats = await store.stats()
    assert stats.count == 3 and stats.max_id == ids[-1]
    assert stats.first_occurred_at == T0 and stats.last_occurred_at == T0 + 120
    assert [(m.model, m.count) for m in stats.models] == [(MODEL, 3)]
    assert stats.db_bytes > 0

    assert await store.delete([ids[0], 12345]) == 1
    assert await store.get([ids[0]]) == []
    assert [h[0] for h in await store.fts_search("rollback", None, Filters(), limit=10)] == [ids[1]]
    assert await store.count(None, Filters()) == 2
    assert await store.delete([]) == 0
    summary = await store.vector_summary()
    assert (summary.count, summary.max_id, summary.id_sum) == (2, ids[2], ids[1] + ids[2])
    # Ids are never reused after a delete.
    assert (await put(store, [make_event(9)]))[0] > ids[-1]


async def test_vocabulary_is_read_by_index_seeks_not_a_table_scan(store: EventStore) -> None:
    await put(store, [make_event(i, event=f"kind_{i % 4}", service=None if i % 5 == 0 else f"svc-{i % 3}",
                                 handle=f"@h{i % 2}") for i in range(40)])
    vocab = await store.vocabulary()
    assert vocab.events == {f"kind_{i}" for i in range(4)}
    assert vocab.services == {"svc-0", "svc-1", "svc-2"}  # NULL service is not a name
    assert vocab.handles == {"@h0", "@h1"}
    conn = sqlite3.connect(store.path)
    try:
        for column in ("event", "service", "from_handle"):
            plan = " | ".join(
                r[-1] for r in conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT (SELECT min({column}) FROM events WHERE {column} > ?)", ("a",)
                )
            )
            assert "USING COVERING INDEX" in plan and "SCAN events" not in plan, plan
            # A window plus a service or sender filter is answered from one index.
            plan = " | ".join(r[-1] for r in conn.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM events WHERE {column} IN (?) AND occurred_at >= ?", ("x", 0.0)
            ))
            assert "COVERING INDEX" in plan, plan
    finally:
        conn.close()


async def test_vectors_by_id_are_the_stored_float32(store: EventStore) -> None:
    events = [make_event(i) for i in range(6)]
    vectors = EMB.encode([e.text for e in events])
    ids = await put(store, events)
    found, matrix = await store.vectors([ids[4], 999, ids[1], ids[4]])
    assert found.tolist() == [ids[1], ids[4]] and matrix.dtype == np.float32
    assert np.array_equal(matrix, vectors[[1, 4]])
    found, matrix = await store.vectors([])
    assert found.shape == (0,) and matrix.shape == (0, 0)
    sample = await store.sample_vectors(4, seed=1)
    assert sample.shape == (4, 32) and all(any(np.array_equal(s, v) for v in vectors) for s in sample)
    assert (await store.sample_vectors(100)).shape == (6, 32)
    head = await store.vector_summary(up_to=ids[2])
    assert (head.count, head.max_id, head.id_sum) == (3, ids[2], sum(ids[:3]))
    chunks = [c async for c in store.iter_vectors(after=ids[3])]
    assert chunks[0][0].tolist() == ids[4:]


async def test_bulk_insert_fills_fts_and_keeps_the_trigger(store: EventStore) -> None:
    events = [make_event(i, text=f"bulk canary {i}") for i in range(5)]
    batch = [*events, events[0]]
    results = await store.insert(batch, EMB.encode([e.text for e in batch]), model=MODEL, bulk=True)
    ids = [r.id for r in results]
    assert [r.duplicate for r in results] == [False] * 5 + [True] and ids[5] == ids[0]
    assert {h[0] for h in await store.fts_search("canary", None, Filters(), limit=10)} == set(ids[:5])
    # The trigger is back: a plain insert is indexed too, and a bulk insert of only duplicates changes nothing.
    later = await put(store, [make_event(9, text="plain canary")])
    assert later[0] in {h[0] for h in await store.fts_search("plain", None, Filters(), limit=10)}
    again = await store.insert(events[:2], EMB.encode([e.text for e in events[:2]]), model=MODEL, bulk=True)
    assert all(r.duplicate for r in again)
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events_fts_ai'").fetchone()[0] == 1
        assert conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')").rowcount != 0
    finally:
        conn.close()


async def test_bm25_kept_by_the_allowed_ids_equals_bm25_joined_with_the_window_and_filters(tmp_path: Path) -> None:
    # The retriever passes the ids a window and filters select (the filter columns) instead of joining a row
    # per match; hits (order, scores), phrase counts and bounds must be exactly those of the join.
    s = await EventStore.open(tmp_path / "m.sqlite3", filter_columns=True)
    try:
        words = ["rollback", "latency", "canary", "ledger", "timeout", "flaky", "zebra", "quota"]
        await put(s, [make_event(i, text=" ".join(words[(i * k) % len(words)] for k in (1, 3, 5, 7)[: 1 + i % 4]),
                                 event=("rollback", "deploy", "anomaly")[i % 3], service=("api", "billing", None)[i % 3 - 1],
                                 handle=("@ci", "@ops")[i % 2], trace=f"t-{i % 7}", at=T0 + (i * 37) % 50 * 60)
                      for i in range(60)])
        assert await s.columns_ready()
        cases = [(TimeWindow(since=T0 + 600, until=T0 + 1800), Filters()),
                 (None, Filters(event=("rollback", "anomaly"))),
                 (TimeWindow(since=T0 + 300), Filters(service=("api",), from_handle=("@ops",))),
                 (None, Filters(trace_id=("t-3",))),
                 (TimeWindow(since=T0 + 10_000), Filters())]
        for window, filters in cases:
            allowed = await s.candidate_ids(window, filters)
            assert allowed is not None
            for question in ("rollback latency", "canary zebra quota timeout", "flaky ledger rollback", "nothing"):
                for limit in (3, 100):
                    joined = await s.lexical_search(question, window, filters, limit=limit)
                    kept = await s.lexical_search(question, window, filters, limit=limit, allowed=allowed)
                    assert kept == joined, (window, filters, question, limit)
        found = await s.lexical_search("rollback latency", None, Filters(), limit=100)
        assert len(found.hits) > 3  # the cases above compare real hit lists
    finally:
        await s.close()


async def test_fts_ranks_the_rarest_words_within_its_budget(tmp_path: Path) -> None:
    s = await EventStore.open(tmp_path / "m.sqlite3", fts_max_docs=4)
    try:
        ids = await put(s, [make_event(i, text=f"common word {'zebra' if i == 3 else 'other'} {i}")
                            for i in range(6)])
        # "common" is in 6 events (over the budget of 4): left out; "zebra" (1 event) is ranked.
        assert [h[0] for h in await s.fts_search("common zebra", None, Filters(), limit=10)] == [ids[3]]
        assert await s.fts_search("common", None, Filters(), limit=10) == []
        s.fts_max_docs = 100
        assert len(await s.fts_search("common zebra", None, Filters(), limit=10)) == 6
        # Window and filters still apply in SQL.
        window = TimeWindow(since=T0 + 60 * 3, until=T0 + 60 * 5)
        assert {h[0] for h in await s.fts_search("common", window, Filters(), limit=10)} == {ids[3], ids[4]}
    finally:
        await s.close()
