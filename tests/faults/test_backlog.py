"""Embedding behind ingest, against the real daemon process (real MiniLM) and a real nats-server: a model that
cannot load (degraded, not down), a report that poisons its transaction, and a SIGKILL while the embedding
backlog drains."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from mesh import AsyncAgent
from mesh.constants import STREAM_NAME
from mesh.handles import durable_name
from mesh.server import NatsServer
from tests.faults.harness import (
    COUNTS,
    DaemonProcess,
    Reporters,
    ask,
    assert_index_agrees,
    embedded_count,
    read_rows,
    short_report,
    wait_embedded,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

NEEDLE = {"event": "rollback", "service": "api-gateway", "trace_id": "t-needle",
          "reason": "error rate spike after the canary of v2.3.1 in eu-west-1"}
POISON = {"event": "poison_pill", "service": "svc-x"}


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), MiB."""
    found = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert found
    return int(found.group(1)) / 1024


async def delivered_and_unacked(url: str) -> tuple[int, int]:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(STREAM_NAME, durable_name("memory"))
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)
    finally:
        await nc.close()


@pytest.mark.timeout(600)
async def test_a_model_that_cannot_load_degrades_and_its_backlog_is_embedded_after_a_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    db = data / "memory.sqlite3"
    broken = {"MEMORY_AGENT_EMBEDDING__MODEL": str(tmp_path / "no-such-model")}
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url, env=broken).start)
    reporters = await Reporters(nats_server.url, n=4).start()
    asker = AsyncAgent(f"asker-{uuid.uuid4().hex[:6]}", servers=nats_server.url)
    run = uuid.uuid4().hex[:8]
    holder: sqlite3.Connection | None = None
    try:
        assert re.search(r"embedding model unavailable: .*no-such-model.*degraded", daemon.log()), daemon.log()
        await asker.start()
        await asker.register()
        opened = await reporters.report_many([*(short_report(i, run) for i in range(40)), NEEDLE])
        replies = await reporters.wait_replies([o.session for o in opened], timeout=120)
        assert {r["status"] for r in replies.values()} == {"stored"}

        stats = await ask(asker, {"op": "stats"})
        assert stats["health"]["status"] == "degraded" and stats["health"]["ready"] is True
        assert stats["embedding"]["status"] == "unavailable" and stats["embedding"]["backlog"] == 41
        assert stats["index"]["size"] == 0 and stats["events"] == 41
        # Lists, counts and BM25 answer from SQLite and FTS5; a ranked search says what is not embedded.
        listing = await ask(asker, "What rollbacks happened today?")
        assert "t-needle" in listing and "@" in listing
        search = await ask(asker, {"query": "error rate spike after a canary in eu-west-1", "mode": "search",
                                   "limit": 3})
        assert search["events"][0]["trace_id"] == "t-needle"
        assert "41 reports in this window not embedded yet" in search["answer"], search["answer"]

        # A report that makes its transaction fail: tried alone, refused; the others of its batch stored.
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TRIGGER poison BEFORE INSERT ON events WHEN new.event = 'poison_pill' "
                         "BEGIN SELECT RAISE(ABORT, 'storage refuses this report'); END")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # hold the writer (under its 5 s busy timeout) so the batch gathers
        first = await reporters.report_many([short_report(100, run)])
        await asyncio.sleep(0.5)  # the writer now waits for the lock with that one report
        batch = await reporters.report_many([*(short_report(101 + i, run) for i in range(28)), POISON])
        while await delivered_and_unacked(nats_server.url) != (0, 30):
            await asyncio.sleep(0.05)
        holder.execute("ROLLBACK")
        holder.close()
        holder = None
        got = await reporters.wait_replies([o.session for o in first + batch], timeout=120)
        poison_reply = got[batch[-1].session]
        assert poison_reply["status"] == "error" and "could not be stored" in poison_reply["error"]
        error_id = re.search(r"error id (e-[0-9a-f]+)", poison_reply["error"]).group(1)  # type: ignore[union-attr]
        assert all(got[o.session]["status"] == "stored" for o in first + batch[:-1])
        assert re.search(r"a transaction of (\d+) reports failed .*storage refuses", daemon.log())
        assert f"(error {error_id})" in daemon.log() and "storage refuses this report" in daemon.log()
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER poison")
        assert await delivered_and_unacked(nats_server.url) == (0, 0)  # the poison is not redelivered
        assert daemon.stop() == 0
    finally:
        if holder is not None:
            holder.close()
        daemon.kill()

    stored = 41 + 29
    assert embedded_count(db) == (stored, 0)
    again = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)  # a working model
    try:
        again.wait_for_log(rf"embedding backlog: {stored} stored events without a vector", 5)
        await wait_embedded(db, stored, timeout=300)
        stats = await ask(asker, {"op": "stats"})
        assert stats["health"]["status"] == "ok" and stats["embedding"]["backlog"] == 0
        answer = await ask(asker, {"query": "canary error spike", "limit": 3})
        assert answer["events"][0]["trace_id"] == "t-needle" and "not embedded" not in answer["answer"]

        # 1 MB reports: the model reads a few KB of each; the payloads are stored whole.
        before = again.rss_mib()
        huge = {"event": "core_dump", "service": "svc-huge", "data": "1," * 500_000}
        flood = await reporters.report_many([*(huge for _ in range(8)), *(short_report(200 + i, run) for i in range(20))])
        got = await reporters.wait_replies([o.session for o in flood], timeout=300)
        assert {r["status"] for r in got.values()} == {"stored"}
        stored += 28
        await wait_embedded(db, stored, timeout=300)
        peak = peak_rss_mib(again.pid)
        stats = await ask(asker, {"op": "stats"})
        assert stats["embedder"]["clipped"] >= 8 and stats["embedding"]["failed"] == 0
        assert again.stop() == 0
    finally:
        await asker.close()
        await reporters.close()
        again.kill()
    rows = read_rows(db)
    assert rows.all_embedded and len(rows.ids) == stored
    assert not any(p.get("event") == "poison_pill" for p in rows.payloads)
    assert sum(1 for p in rows.payloads if p == huge) == 8  # stored whole
    assert_index_agrees(data, rows)
    # Before the cut, each 1 MB text cost the tokenizer about 125 MB (8 in a batch: a GB).
    assert peak - before < 400, f"RSS grew by {peak - before:.0f} MiB embedding 1 MB reports"
    print(f"\n8 reports of 1 MB: RSS {before:.0f} MiB before, peak {peak:.0f} MiB")


@pytest.mark.timeout(900)
async def test_sigkill_during_the_embedding_backlog_resumes_and_embeds_each_row_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    n = COUNTS.backlog_reports
    data = tmp_path / "data"
    db = data / "memory.sqlite3"
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    reporters = await Reporters(nats_server.url).start()
    run = uuid.uuid4().hex[:8]
    try:
        started = time.monotonic()
        opened = await reporters.report_many([short_report(i, run) for i in range(n)], concurrency=256)
        replies: dict[str, Any] = await reporters.wait_replies([o.session for o in opened], timeout=300)
        acked_s = time.monotonic() - started
        assert {r["status"] for r in replies.values()} == {"stored"}
        # Kill while the backlog drains: some rows have their vector, the rest do not yet.
        deadline = time.monotonic() + 300
        while embedded_count(db)[1] < n // 5:
            assert time.monotonic() < deadline, embedded_count(db)
            await asyncio.sleep(0.05)
        daemon.kill()
        total, embedded_at_kill = embedded_count(db)
        assert total == n and embedded_at_kill < n, "the backlog was embedded before the kill: nothing tested"

        restarted = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
        restarted.wait_for_log(rf"embedding backlog: {n - embedded_at_kill} stored events without a vector", 5)
        await wait_embedded(db, n, timeout=600)
        asker = AsyncAgent(f"asker-{uuid.uuid4().hex[:6]}", servers=nats_server.url)
        await asker.start()
        await asker.register()
        try:
            stats = await ask(asker, {"op": "stats"})
        finally:
            await asker.close()
        # The restarted daemon embedded exactly the rows without a vector: none twice.
        assert stats["embedding"]["embedded"] == n - embedded_at_kill and stats["index"]["size"] == n
        assert restarted.stop() == 0
    finally:
        await reporters.close()
        daemon.kill()
    rows = read_rows(db)
    assert sorted(rows.message_ids) == sorted(o.message_id for o in opened)  # each stored once
    assert rows.all_embedded
    assert_index_agrees(data, rows)
    print(f"\n{n} reports acknowledged in {acked_s:.1f} s; SIGKILL with {embedded_at_kill} embedded; the restart "
          f"embedded the other {n - embedded_at_kill}; FAISS equals SQLite")
