"""One owner, and an agent that watches its own foundations (issue 14 items 2 and 8, the first half of 6).

* A frozen owner (SIGSTOP) whose claim expires is replaced; when it resumes it finds out before it does
  anything, stops consuming, acknowledges nothing more and says so (ClaimLost, ``on_claim_lost``, exit);
  every message goes to the new owner, none is split between the two.
* An agent whose consumer is deleted, whose stream is deleted and made again, or whose nats-server comes
  back with an empty store, notices it at its next heartbeat, says what it found, and re-creates what it
  owns (and registers again), instead of staying registered and deaf.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import nats
import pytest

from mesh import AsyncAgent, ClaimLost, HandleNotFound, HandleTaken, NatsServer
from mesh.constants import REGISTRY_BUCKET, STREAM_NAME
from mesh.handles import durable_name
from mesh.registry import Record
from tests.mesh.helpers import Factory, eventually, inbox, next_msg

REPO = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, sys
from mesh import AsyncAgent, ClaimLost, HandleTaken

async def main(url, name):
    def lost(err):
        print("LOST", flush=True)

    agent = AsyncAgent("worker", servers=url, heartbeat_interval=0.3, ack_wait=2.0, on_claim_lost=lost)

    @agent.on_message
    async def handle(msg):
        print("HANDLED", name, msg.message_id, flush=True)
        if msg.payload == "slow":
            await asyncio.sleep(2.0)  # frozen in here
        await agent.resolve(msg.session, name)
        print("RESOLVED", name, msg.message_id, flush=True)

    async with agent:
        while True:
            try:
                await agent.register()
                break
            except HandleTaken:
                await asyncio.sleep(0.1)
        print("READY", flush=True)
        try:
            await agent.run_forever()
        except ClaimLost:
            print("EXIT", flush=True)
            sys.exit(3)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Worker:
    """A worker agent in its own process; its stdout lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            self.lines.append(line.strip())

    async def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        async def check() -> bool:
            return any(line.startswith(prefix) for line in self.lines)

        assert await eventually(check, timeout), f"no {prefix!r} in {self.lines}"
        return next(line for line in self.lines if line.startswith(prefix))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


async def _worker(script: Path, url: str, name: str) -> Worker:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), url, name,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    return Worker(proc)


async def test_a_frozen_owner_is_replaced_and_stops_when_it_resumes_with_no_split(
    mesh_agent: Factory, nats_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    a = await _worker(script, nats_url, "a")
    b: Worker | None = None
    try:
        await a.wait_for("READY")
        client = await mesh_agent("client")
        assert (await client.request("worker", "first", timeout=15)).payload == "a"
        slow = asyncio.create_task(client.request("worker", "slow", timeout=30))
        await a.wait_for("HANDLED a")
        handled = len([line for line in a.lines if line.startswith("HANDLED")])
        a.proc.send_signal(signal.SIGSTOP)  # frozen with "slow" in hand, unacknowledged

        # b claims the handle once a's heartbeat expired (3 x 0.3 s), and takes over its consumers: what a
        # held unacknowledged comes to b at once.
        b = await _worker(script, nats_url, "b")
        await b.wait_for("READY")
        assert (await asyncio.wait_for(slow, 15)).payload == "b"
        answers = [(await client.request("worker", f"n{i}", timeout=15)).payload for i in range(10)]
        assert answers == ["b"] * 10

        a.proc.send_signal(signal.SIGCONT)  # a resumes in the middle of its handler
        assert await asyncio.wait_for(a.proc.wait(), 15) == 3
        await a.wait_for("LOST")
        assert len([line for line in a.lines if line.startswith("HANDLED")]) == handled  # nothing after resuming
        assert len([line for line in a.lines if line.startswith("RESOLVED")]) == 1  # "first" only, not "slow"
        assert (await client.request("worker", "after", timeout=15)).payload == "b"
        nc = await nats.connect(nats_url)
        info = await nc.jetstream().consumer_info(STREAM_NAME, durable_name("worker"))
        await nc.close()
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
    finally:
        if a.proc.returncode is None:
            a.proc.send_signal(signal.SIGCONT)
        await a.stop()
        if b is not None:
            await b.stop()


async def test_an_agent_that_loses_its_claim_says_so_and_acts_no_more(mesh_agent: Factory) -> None:
    lost: list[ClaimLost] = []
    old = await mesh_agent("worker", register=False, heartbeat_interval=0.1, on_claim_lost=lost.append)
    old_in = inbox(old)
    await old.register()
    assert old._presence is not None
    await old._presence.stop_heartbeat()  # hung: no heartbeats, but the process still runs
    heir = await mesh_agent("worker", register=False)
    heir_in = inbox(heir)
    for _ in range(100):
        try:
            await heir.register()
            break
        except HandleTaken:
            await asyncio.sleep(0.05)
    client = await mesh_agent("client")
    opened = await client.open_session("worker", "to the new owner")
    assert (await next_msg(heir_in)).message_id == opened.message_id
    with pytest.raises(ClaimLost) as err:  # the old owner finds out the moment it acts as the handle
        await old.send(opened.session, "as the old owner")
    assert err.value.handle == "worker" and "claimed by another agent" in str(err.value)
    with pytest.raises(ClaimLost):
        await asyncio.wait_for(old.run_forever(), 5)
    assert len(lost) == 1 and old.claim_lost is lost[0] and not old.is_registered
    assert old_in.empty()
    with pytest.raises(ClaimLost):
        await old.open_session("client", "still me?")
    await old.close()  # touches nothing of the new owner's
    assert (await client.introspect("worker")).online


async def test_a_deleted_consumer_is_noticed_and_made_again_with_nothing_lost(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker", register=False, heartbeat_interval=0.2)
    worker_in = inbox(worker)
    await worker.register()
    client = await mesh_agent("client")
    nc = await nats.connect(nats_url)
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        await nc.jetstream().delete_consumer(STREAM_NAME, durable_name("worker"))
        opened = await client.open_session("worker", "sent while the consumer was gone")
        got = await next_msg(worker_in, timeout=15)
        assert await eventually(lambda: _logged(caplog, "re-created consumer inbox_worker"), 10)
    await nc.close()
    assert got.message_id == opened.message_id
    assert "consumer inbox_worker gone (stream MESH_INBOX is there, only the consumer was deleted)" in caplog.text


async def test_a_stream_deleted_and_made_again_is_noticed(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker", register=False, heartbeat_interval=0.2)
    worker_in = inbox(worker)
    await worker.register()
    client = await mesh_agent("client")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    config = (await js.stream_info(STREAM_NAME)).config
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        await js.delete_stream(STREAM_NAME)
        await js.add_stream(config)
        assert await eventually(lambda: _logged(caplog, "re-created consumer"), 10)
        opened = await client.open_session("worker", "after the stream came back")
        assert (await next_msg(worker_in, timeout=15)).message_id == opened.message_id
    await nc.close()
    assert "stream MESH_INBOX was deleted and made again (what it held is gone)" in caplog.text


async def test_a_server_restarted_on_an_empty_store_is_noticed_and_everyone_registers_again(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = nats_server.url
    worker = AsyncAgent("worker", servers=url, heartbeat_interval=0.2)
    client = AsyncAgent("client", servers=url, heartbeat_interval=0.2)
    worker_in = inbox(worker)
    async with worker, client:
        await worker.register()
        await client.register()
        with caplog.at_level(logging.WARNING, logger="mesh.agent"):
            await asyncio.to_thread(nats_server.stop)
            shutil.rmtree(nats_server.store_dir / "jetstream")
            await asyncio.to_thread(nats_server.start)

            async def reachable() -> bool:
                try:
                    return (await client.introspect("worker")).online
                except Exception:
                    return False

            assert await eventually(reachable, 20)
            opened = await _retrying_open(client, "worker", "after the server lost everything")
            assert (await next_msg(worker_in, timeout=15)).message_id == opened.message_id
        assert "mesh agent worker: its registry entry is gone" in caplog.text
        assert "mesh agent worker: registered again" in caplog.text
        assert "claimed by another agent" not in caplog.text


async def _retrying_open(agent: AsyncAgent, to: str, payload: str) -> Any:
    for _ in range(50):
        try:
            return await agent.open_session(to, payload)
        except HandleNotFound:
            await asyncio.sleep(0.2)
    return await agent.open_session(to, payload)


async def test_the_registry_entry_deleted_under_a_live_agent_is_restored(mesh_agent: Factory, nats_url: str) -> None:
    worker = await mesh_agent("worker", heartbeat_interval=0.2)
    client = await mesh_agent("client")
    nc = await nats.connect(nats_url)
    kv = await nc.jetstream().key_value(REGISTRY_BUCKET)
    await kv.delete("worker")
    assert not await _found(client, "worker")
    assert await eventually(lambda: _found(client, "worker"), 10)
    entry = await kv.get("worker")
    await nc.close()
    assert Record.decode(entry.value or b"").online and worker.is_registered


async def _found(agent: AsyncAgent, handle: str) -> bool:
    return (await agent.introspect(handle)).found


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text
