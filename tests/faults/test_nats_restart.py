"""nats-server restarts (same port, same JetStream store) while reports flow: nothing is lost, and the
daemon and the reporting agents reconnect by themselves."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mesh import MeshError, Opened
from mesh.server import NatsServer
from tests.faults.harness import (
    COUNTS,
    DaemonProcess,
    Reporters,
    ask,
    assert_index_agrees,
    read_rows,
    short_report,
    wait_rows,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(600)]

DOWN_FOR = 2.0  # seconds nats-server stays down


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_nats_server_restart_while_reporting_loses_nothing(
    nats_server: NatsServer, tmp_path: Path, how: str
) -> None:
    n = COUNTS.restart_reports
    data = tmp_path / "data"
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    reporters = await Reporters(nats_server.url).start()
    run = uuid.uuid4().hex[:8]
    opened: dict[int, Opened] = {}
    failures: Counter[str] = Counter()

    async def produce() -> None:
        # A steady stream, 16 sends at a time; a send that fails while the server is away is retried.
        slots = asyncio.Semaphore(16)

        async def one(seq: int) -> None:
            async with slots:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        opened[seq] = await reporters.report(seq, short_report(seq, run))
                        return
                    except MeshError as exc:  # while the server is down: the caller retries
                        failures[f"{type(exc).__name__}: {str(exc)[:70]}"] += 1
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)

        await asyncio.gather(*(one(seq) for seq in range(n)))

    try:
        producer = asyncio.create_task(produce())
        while len(opened) < n // 3:
            assert not producer.done(), producer
            await asyncio.sleep(0.01)
        at_restart = len(opened)
        await asyncio.to_thread(nats_server.stop if how == "sigterm" else nats_server.kill)
        await asyncio.sleep(DOWN_FOR)
        await asyncio.to_thread(nats_server.start)
        await asyncio.wait_for(producer, 180)
        await wait_rows(data / "memory.sqlite3", n, timeout=300)
        # Every sender, and the daemon, are back on the mesh without being restarted.
        assert daemon.running
        assert all(agent.is_connected for agent in reporters.agents)
        stats = await ask(reporters.agents[0], {"op": "stats"})
        assert stats["events"] == n
        replies = await reporters.wait_replies([o.session for o in opened.values()], timeout=120)
        assert daemon.stop() == 0
    finally:
        await reporters.close()
        daemon.kill()

    rows = read_rows(data / "memory.sqlite3")
    seqs = sorted(p["seq"] for p in rows.payloads)
    assert seqs == list(range(n)), f"missing {sorted(set(range(n)) - set(seqs))[:10]}, duplicated " \
                                   f"{sorted({s for s in seqs if seqs.count(s) > 1})[:10]}"
    assert set(rows.message_ids) == {o.message_id for o in opened.values()}
    assert {r["status"] for r in replies.values()} == {"stored"}
    assert_index_agrees(data, rows)
    print(f"\nnats-server {how} after {at_restart} of {n} reports, down {DOWN_FOR} s: sends raised {dict(failures)} "
          f"and were retried; all {n} stored once and answered; daemon pid unchanged")
