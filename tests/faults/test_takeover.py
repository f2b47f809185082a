"""A takeover without a split (issue 14, item 2), with two real ``memory-agent run`` processes.

Daemon A serves; it is frozen (SIGSTOP) while reports keep coming; standby B, waiting for the handle,
claims it once A's heartbeat expired and takes over A's consumers. When A resumes it finds that it lost
the claim before it handles anything more: it stores none of what came while it was frozen, and exits 1
saying so, so a supervisor restarts it as a standby. Every report is stored by exactly one daemon: the
ones before the freeze by A, the ones after by B (before the fix, 200 reports split 106/94 between them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from mesh.server import NatsServer
from tests.faults.harness import DaemonProcess, Reporters, read_rows, short_report

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(600)]

#: Reports before the freeze and while A is frozen (the issue's 200 in all).
PER_PHASE = 100


async def test_a_frozen_daemon_is_replaced_without_a_split_and_exits_when_it_resumes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    a = await asyncio.to_thread(DaemonProcess(tmp_path / "a", url).start)
    b = DaemonProcess(tmp_path / "b", url)
    reporters = await Reporters(url, n=4).start()
    run = uuid.uuid4().hex[:8]
    try:
        before = await reporters.report_many([short_report(i, run) for i in range(PER_PHASE)])
        await reporters.wait_replies([o.session for o in before], timeout=120)

        os.kill(a.pid, signal.SIGSTOP)
        during = await reporters.report_many([short_report(PER_PHASE + i, run) for i in range(PER_PHASE)])
        # B waits for the handle (HandleTaken while A's claim lasts), then takes it over.
        await asyncio.to_thread(b.start, 180.0)
        await reporters.wait_replies([o.session for o in during], timeout=120)

        os.kill(a.pid, signal.SIGCONT)
        assert a.proc is not None
        code = await asyncio.to_thread(a.proc.wait, 60)
        assert code == 1, a.log()[-2000:]
        assert "ClaimLost: handle 'memory' was claimed by another agent while this one held it" in a.log()
        assert b.stop() == 0
    finally:
        await reporters.close()
        if a.running:
            os.kill(a.pid, signal.SIGCONT)
        a.kill()
        b.kill()

    stored_by_a = set(read_rows(tmp_path / "a" / "memory.sqlite3").message_ids)
    stored_by_b = set(read_rows(tmp_path / "b" / "memory.sqlite3").message_ids)
    assert stored_by_a == {o.message_id for o in before}
    assert stored_by_b == {o.message_id for o in during}
    statuses = {reporters.replies[o.session].payload.count('"status": "stored"') for o in before + during}
    assert statuses == {1}
