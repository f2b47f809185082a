"""Storage faults against the real daemon process and a real nats-server: SQLite locked by another process for
longer than the old give-up time, a full disk (a real tmpfs in a private mount namespace), the data directory
deleted under the daemon. Reports are never lost, never refused for it, never acknowledged before they are on
disk; questions are answered meanwhile."""

from __future__ import annotations

import asyncio
import errno
import shutil
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
    SmallDisk,
    ask,
    read_rows,
    row_count,
    short_report,
    wait_embedded,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]


async def consumer_state(url: str) -> tuple[int, int, int]:
    """(pending in JetStream, delivered and unacknowledged, redelivered) of @memory's durable consumer."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(STREAM_NAME, durable_name("memory"))
        return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0)
    finally:
        await nc.close()


async def asker_on(url: str) -> AsyncAgent:
    agent = AsyncAgent(f"asker-{uuid.uuid4().hex[:6]}", servers=url)
    await agent.start()
    await agent.register()
    return agent


@pytest.mark.timeout(900 if COUNTS.queued_reports > 5_000 else 300)
async def test_a_question_is_answered_while_reports_wait_for_a_locked_store_and_none_is_lost(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    n = COUNTS.queued_reports
    data = tmp_path / "data"
    db = data / "memory.sqlite3"
    # Room for every report in the daemon: what is measured is the daemon, not JetStream's ordering.
    daemon = await asyncio.to_thread(
        DaemonProcess(data, nats_server.url, env={"MEMORY_AGENT_MAX_IN_FLIGHT": str(n + 512)}).start)
    reporters = await Reporters(nats_server.url).start()
    asker = await asker_on(nats_server.url)
    run = uuid.uuid4().hex[:8]
    holder: sqlite3.Connection | None = None
    try:
        seed = await reporters.report_many([short_report(-i - 1, run) for i in range(10)])
        await reporters.wait_replies([o.session for o in seed], timeout=120)
        answered = len(reporters.replies)

        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
        locked_at = time.monotonic()
        opened = await reporters.report_many([short_report(i, run) for i in range(n)], concurrency=256)
        deadline = time.monotonic() + 120
        while (await consumer_state(nats_server.url))[:2] != (0, n):  # every report is in the daemon's hands
            assert time.monotonic() < deadline, await consumer_state(nats_server.url)
            await asyncio.sleep(0.2)

        answer = await ask(asker, {"query": "How many fault probes were reported?"}, timeout=60)
        # Answered from what is committed, before any of the waiting reports was acknowledged.
        assert answer["answer"].startswith("10 events"), answer["answer"]
        assert len(reporters.replies) == answered and row_count(db) == 10

        daemon.wait_for_log(r"storage unavailable: database is busy", 30)
        stats = await ask(asker, {"op": "stats"}, timeout=60)
        assert stats["health"]["status"] == "not_ready" and stats["health"]["storage"] == "unavailable"
        assert any("database is busy" in r for r in stats["health"]["reasons"]), stats["health"]

        await asyncio.sleep(max(0.0, COUNTS.lock_seconds - (time.monotonic() - locked_at)))
        assert len(reporters.replies) == answered  # nothing acknowledged while the lock was held
        holder.execute("ROLLBACK")
        holder.close()
        holder = None
        locked_s = time.monotonic() - locked_at

        replies = await reporters.wait_replies([o.session for o in opened], timeout=300)
        deadline = time.monotonic() + 30
        while (state := await consumer_state(nats_server.url))[:2] != (0, 0):  # acks follow the replies
            assert time.monotonic() < deadline, state
            await asyncio.sleep(0.2)
        pending, unacked, redelivered = state
        await wait_embedded(db, n + 10, timeout=600)
        assert daemon.stop() == 0
    finally:
        if holder is not None:
            holder.close()
        await asker.close()
        await reporters.close()
        daemon.kill()

    assert {r["status"] for r in replies.values()} == {"stored"}  # none refused for the outage
    assert len({r["id"] for r in replies.values()}) == n
    rows = read_rows(db)
    assert sorted(rows.message_ids) == sorted([o.message_id for o in seed] + [o.message_id for o in opened])
    assert (pending, unacked, redelivered) == (0, 0, 0)  # no delivery was spent on the outage
    log = daemon.log()
    assert log.count("storage unavailable: database is busy") == 1, "logged once per outage"
    assert log.count("storage is back after") == 1
    print(f"\nSQLite write lock held {locked_s:.0f} s with {n} reports in the daemon: a question answered "
          f"meanwhile; after the release all {n} stored once, no redelivery; "
          f"{next(line for line in log.splitlines() if 'storage is back' in line).split(': ', 1)[-1]}")


@pytest.mark.skipif(not SmallDisk.available(), reason="needs unshare (an unprivileged user namespace) for a tmpfs")
@pytest.mark.timeout(600)
async def test_a_full_disk_keeps_reports_unacknowledged_until_space_is_freed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    disk = SmallDisk(tmp_path / "disk", size_mib=64).start()
    data = disk.path / "data"
    db = data / "memory.sqlite3"  # as the daemon sees it
    daemon = DaemonProcess(data, nats_server.url, prefix=disk.prefix)
    reporters: Reporters | None = None
    n = 400
    run = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    phases: list[tuple[str, float]] = []

    def phase(name: str) -> None:
        phases.append((name, round(time.monotonic() - t0, 1)))

    try:
        await asyncio.to_thread(daemon.start)
        phase("started")
        reporters = await Reporters(nats_server.url).start()
        asker = await asker_on(nats_server.url)
        seed = await reporters.report_many([short_report(-i - 1, run) for i in range(20)])
        await reporters.wait_replies([o.session for o in seed], timeout=120)

        filler = disk.outside(disk.path / "filler")
        with open(filler, "wb") as out:  # fill the disk to the last block
            chunk = b"\0" * (1 << 20)
            try:
                while True:
                    out.write(chunk)
                    out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        full_at = time.monotonic()
        phase("full")
        # 2 KB each: the WAL and the database must grow to take them.
        big = [{**short_report(i, run), "detail": f"stack trace {i} " + "0x7f3a " * 340} for i in range(n)]
        opened = await reporters.report_many(big, concurrency=64)
        daemon.wait_for_log(r"storage unavailable: disk is full", 60)
        phase("outage logged")
        stats = await ask(asker, {"op": "stats"}, timeout=60)
        assert stats["health"]["storage"] == "unavailable" and stats["health"]["status"] == "not_ready"
        answer = await ask(asker, "How many fault probes were reported today?", timeout=60)
        assert "fault" in answer  # questions are answered while the disk is full
        await asyncio.sleep(max(0.0, COUNTS.disk_full_seconds - (time.monotonic() - full_at)))
        stored_while_full = sum(1 for o in opened if o.session in reporters.replies)
        filler.unlink()  # space is back
        full_s = time.monotonic() - full_at
        phase("freed")

        replies = await reporters.wait_replies([o.session for o in opened], timeout=300)
        phase("replies")
        assert disk.embedded_count(db)[0] == n + 20
        assert daemon.stop() == 0  # what is not embedded yet is left to the next start
        phase("stopped")
        rows = read_rows(disk.copy_out(data, tmp_path / "copy") / "memory.sqlite3")
        await asker.close()
    finally:
        if reporters is not None:
            await reporters.close()
        daemon.kill()
        disk.close()

    assert {r["status"] for r in replies.values()} == {"stored"}  # none refused for the full disk
    assert len(rows.message_ids) == n + 20 == len(set(rows.message_ids))
    assert {o.message_id for o in opened} <= set(rows.message_ids)
    log = daemon.log()
    assert log.count("storage unavailable: disk is full") == 1, "logged once per outage"
    assert "storage is back after" in log
    assert "cannot rollback" not in log  # the real error is logged, not the rollback's
    print(f"\nphases {phases}; disk full for {full_s:.0f} s (tmpfs of 64 MiB in a user namespace): {stored_while_full} of {n} reports "
          f"fitted in space SQLite already had; the rest waited, unacknowledged, and all {n} were stored once")


@pytest.mark.timeout(300)
async def test_a_deleted_data_dir_stops_acknowledgement_and_the_daemon_exits_non_zero(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    # The held reports are given back (unacknowledged) when the shutdown's drain ends: 3 s here, not 30.
    daemon = await asyncio.to_thread(
        DaemonProcess(data, nats_server.url, env={"MEMORY_AGENT_DRAIN_TIMEOUT": "3"}).start)
    reporters = await Reporters(nats_server.url, n=2).start()
    run = uuid.uuid4().hex[:8]
    elsewhere = DaemonProcess(tmp_path / "restored", nats_server.url)
    try:
        before = await reporters.report_many([short_report(i, run) for i in range(10)])
        await reporters.wait_replies([o.session for o in before], timeout=120)
        shutil.rmtree(data)
        after = await reporters.report_many([short_report(100 + i, run) for i in range(10)])
        code = await asyncio.to_thread(daemon.wait_exit, 60)
        assert code != 0, daemon.log()
        assert "is gone (the database file or its directory was deleted)" in daemon.log()
        # Not one of the later reports was answered "stored": none of them is on any disk.
        assert not any(o.session in reporters.replies for o in after)
        # They wait, unacknowledged, for a daemon whose store works.
        await asyncio.to_thread(elsewhere.start)
        replies: dict[str, Any] = await reporters.wait_replies([o.session for o in after], timeout=120)
        assert elsewhere.stop() == 0
    finally:
        await reporters.close()
        daemon.kill()
        elsewhere.kill()
    assert {r["status"] for r in replies.values()} == {"stored"}
    rows = read_rows(tmp_path / "restored" / "memory.sqlite3")
    assert sorted(rows.message_ids) == sorted(o.message_id for o in after)
    print(f"\ndata dir deleted: the daemon exited with {code}; the 10 later reports were stored by the next daemon")
