"""Load: a burst of reports far larger than the daemon takes in at once, and 100 agents asking questions
while ingest runs. Memory stays bounded because the daemon's durable consumer has at most
``max_in_flight`` unacknowledged messages out (MaxAckPending); the rest waits in JetStream."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import nats
import numpy as np
import pytest

from mesh.constants import STREAM_NAME
from mesh.handles import durable_name
from mesh.server import NatsServer
from tests.faults.harness import (
    COUNTS,
    FULL_COUNTS,
    DaemonProcess,
    Reporters,
    ask,
    assert_index_agrees,
    read_rows,
    short_report,
    wait_embedded,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

# Bound on the daemon's RSS growth during a burst of n reports, MiB:
#   the flat FAISS index grows by 384 floats = 1.5 KiB per stored vector, and saving it holds two
#   transient copies (faiss.serialize_index, then bytes): 3 * n * 1.5 KiB;
#   plus a fixed allowance for what does not grow with n: up to max_in_flight (512) reports and their
#   replies in the process, the ingest queue (1,024 reports), one backlog round (256 texts) and one encode
#   call (8 texts) through the model, SQLite's page cache, allocator slack.
FIXED_ALLOWANCE_MIB = 256.0
INDEX_BYTES_PER_REPORT = 384 * 4


def rss_bound_mib(n: int) -> float:
    return 3 * n * INDEX_BYTES_PER_REPORT / 2**20 + FIXED_ALLOWANCE_MIB


@pytest.mark.timeout(1500 if FULL_COUNTS else 600)
async def test_burst_memory_stays_bounded_nothing_dropped_and_it_drains(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    n = COUNTS.burst_reports
    data = tmp_path / "data"
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    reporters = await Reporters(nats_server.url).start()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    run = uuid.uuid4().hex[:8]
    warm = 256
    samples: list[float] = []
    pending: list[int] = []
    stream_bytes: list[int] = []
    unacked: list[int] = []
    try:
        # Warm up (first inference allocates the model's buffers), then take the baseline.
        opened = await reporters.report_many([short_report(-i - 1, run) for i in range(warm)])
        await reporters.wait_replies([o.session for o in opened], timeout=120)
        baseline = daemon.rss_mib()

        async def sample() -> None:
            while True:
                samples.append(daemon.rss_mib())
                info = await js.consumer_info(STREAM_NAME, durable_name("memory"))
                pending.append(int(info.num_pending or 0) + int(info.num_ack_pending or 0))
                unacked.append(int(info.num_ack_pending or 0))
                stream_bytes.append(int((await js.stream_info(STREAM_NAME)).state.bytes or 0))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        opened = await reporters.report_many([short_report(i, run) for i in range(n)], concurrency=256)
        published_s = time.monotonic() - started
        replies = await reporters.wait_replies([o.session for o in opened], timeout=max(300.0, n / 20))
        drained_s = time.monotonic() - started
        info = await js.consumer_info(STREAM_NAME, durable_name("memory"))
        assert (info.num_pending, info.num_ack_pending) == (0, 0), "the daemon's inbox did not drain"
        # Acknowledged once stored; memory is sampled until the embedding backlog is embedded too.
        await wait_embedded(data / "memory.sqlite3", n + warm, timeout=max(300.0, n / 20))
        embedded_s = time.monotonic() - started
        sampler.cancel()
        assert daemon.stop() == 0
    finally:
        await nc.close()
        await reporters.close()
        daemon.kill()

    assert {r["status"] for r in replies.values()} == {"stored"}
    assert len({r["id"] for r in replies.values()}) == n
    rows = read_rows(data / "memory.sqlite3")
    assert len(rows.ids) == n + warm
    assert sorted(p["seq"] for p in rows.payloads if p["seq"] >= 0) == list(range(n))
    assert rows.all_embedded
    assert_index_agrees(data, rows)
    peak = max(samples)
    print(f"\nburst of {n}: published in {published_s:.1f} s, acknowledged in {drained_s:.1f} s "
          f"({n / drained_s:.0f} reports/s), embedded in {embedded_s:.1f} s; JetStream held up to {max(pending)} for the daemon "
          f"({max(stream_bytes) / 2**20:.1f} MiB in the stream), at most {max(unacked)} of them out to it; "
          f"RSS baseline {baseline:.0f} MiB, peak {peak:.0f} MiB (+{peak - baseline:.0f}, "
          f"bound +{rss_bound_mib(n):.0f})")
    assert peak - baseline <= rss_bound_mib(n), f"RSS grew by {peak - baseline:.0f} MiB"
    assert max(pending) > 2 * 512, "the burst never queued in JetStream; it tested nothing"
    # What keeps memory bounded: the server never has more than max_in_flight out to the daemon.
    assert max(unacked) <= 512, f"{max(unacked)} reports out to the daemon at once"


@pytest.mark.timeout(600)
async def test_hundred_agents_ask_while_ingest_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    data = tmp_path / "data"
    daemon = await asyncio.to_thread(DaemonProcess(data, nats_server.url).start)
    reporters = await Reporters(nats_server.url, n=4).start()
    askers = await Reporters(nats_server.url, n=COUNTS.askers, prefix="asker").start()
    run = uuid.uuid4().hex[:8]
    questions = [
        "What rollbacks happened in the last 7 days?",
        {"query": "fault probe on svc-3", "limit": 5},
        "How many fault probes were reported today?",
        {"query": "error rate spike", "filters": {"service": "svc-1"}, "limit": 3},
        "Which services reported fault probes?",
    ]
    latencies: list[float] = []
    answers: list[object] = []
    try:
        seed = await reporters.report_many([short_report(i, run) for i in range(200)])
        await reporters.wait_replies([o.session for o in seed], timeout=120)

        async def ingest() -> list[str]:
            # Reports keep arriving, in waves, for as long as the questions run.
            sessions: list[str] = []
            for wave in range(COUNTS.ingest_during_questions // 100):
                batch = [short_report(1000 + wave * 100 + i, run) for i in range(100)]
                sessions += [o.session for o in await reporters.report_many(batch)]
                await asyncio.sleep(0.2)
            return sessions

        async def asker(k: int) -> None:
            agent = askers.agents[k]
            for j in range(COUNTS.questions_per_asker):
                started = time.monotonic()
                answer = await ask(agent, questions[(k + j) % len(questions)], timeout=300)
                latencies.append(time.monotonic() - started)
                answers.append(answer)

        feeder = asyncio.create_task(ingest())
        await asyncio.sleep(1.0)  # ingest is under way before the first question
        started = time.monotonic()
        await asyncio.gather(*(asker(k) for k in range(COUNTS.askers)))
        asked_s = time.monotonic() - started
        sessions = await feeder
        replies = await reporters.wait_replies(sessions, timeout=300)
        assert daemon.stop() == 0
    finally:
        await askers.close()
        await reporters.close()
        daemon.kill()

    assert {r["status"] for r in replies.values()} == {"stored"}
    total = COUNTS.askers * COUNTS.questions_per_asker
    assert len(answers) == total
    for answer in answers:
        if isinstance(answer, dict):
            assert "events" in answer and "answer" in answer, answer
        else:
            assert not answer.lstrip().startswith('{"status": "error"'), answer
            assert answer.strip()
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"\n{COUNTS.askers} agents asked {total} questions in {asked_s:.1f} s while "
          f"{len(sessions)} reports were ingested: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms; no errors")
    assert_index_agrees(data, read_rows(data / "memory.sqlite3"))
