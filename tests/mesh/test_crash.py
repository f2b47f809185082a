"""A process SIGKILLed in the middle of a handler loses nothing: the message was never acked, so a
new agent with the same handle (claimed after the old heartbeat expired) gets it redelivered."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from mesh import HandleTaken, Message
from tests.mesh.helpers import Factory

REPO = Path(__file__).resolve().parents[2]

VICTIM = """
import asyncio, sys
from mesh import AsyncAgent

async def main(url):
    agent = AsyncAgent("victim", servers=url, ack_wait=1.0, heartbeat_interval=0.2)

    @agent.on_message
    async def handle(msg):
        print("RECEIVED", msg.message_id, flush=True)
        await asyncio.sleep(3600)  # killed in here, before the ack

    async with agent:
        await agent.register()
        print("READY", flush=True)
        await agent.run_forever()

asyncio.run(main(sys.argv[1]))
"""


async def _read_line(proc: asyncio.subprocess.Process, prefix: str, timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    stdout = proc.stdout

    async def read() -> str:
        while True:
            line = (await stdout.readline()).decode()
            if not line:
                raise AssertionError(f"victim exited (code {proc.returncode}) before printing {prefix}")
            if line.startswith(prefix):
                return line.strip()

    return await asyncio.wait_for(read(), timeout)


async def test_killed_before_ack_means_redelivery_not_loss(mesh_agent: Factory, nats_url: str,
                                                           tmp_path: Path) -> None:
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), nats_url,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    try:
        await _read_line(proc, "READY")
        sender = await mesh_agent("sender")
        opened = await sender.open_session("victim", "do not lose me", trace_id="t-crash")
        received = await _read_line(proc, "RECEIVED")
        assert received == f"RECEIVED {opened.message_id}"
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    heir = await mesh_agent("victim", register=False, ack_wait=1.0)
    redelivered: asyncio.Queue[Message] = asyncio.Queue()

    @heir.on_message
    async def handle(msg: Message) -> None:
        await redelivered.put(msg)

    for _ in range(100):  # the dead owner's heartbeat (0.2 s, 3 missed) expires quickly
        try:
            await heir.register()
            break
        except HandleTaken:
            await asyncio.sleep(0.1)
    assert heir.is_registered
    msg = await asyncio.wait_for(redelivered.get(), 15)
    assert (msg.message_id, msg.payload, msg.trace_id) == (opened.message_id, "do not lose me", "t-crash")
    await heir.resolve(msg.session, "handled after the crash")
