"""The semantics decided in docs/mesh.md ("Semantics"), each on a real server: late replies, handler-less
agents, sync handlers in order, taking a handle back after a crash, close(grace=), the constructor's
tailbus options and $NATS_URL, list_sessions, and tailbus's error names."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import mesh
from mesh import (
    AgentClosed,
    AsyncAgent,
    BridgeDiedError,
    BridgeError,
    HandleNotFound,
    HandleTaken,
    Message,
    NotRegisteredError,
    SyncAgent,
    TailbusError,
)
from mesh.claim import ClaimFile
from tests.mesh.helpers import Factory, eventually, inbox, next_msg
from tests.mesh.test_delivery import stored_for

REPO = Path(__file__).resolve().parents[2]


async def test_a_reply_after_request_gave_up_is_dropped_not_handled(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    slow = await mesh_agent("slow")
    client = await mesh_agent("client")
    client_in = inbox(client)
    release = asyncio.Event()

    @slow.on_message
    async def answer_late(msg: Message) -> None:
        await release.wait()
        await slow.send(msg.session, "late")
        await slow.resolve(msg.session, "later")

    with caplog.at_level(logging.DEBUG, logger="mesh.agent"):
        with pytest.raises(mesh.MeshTimeout):
            await client.request("slow", "anyone?", timeout=0.3)
        release.set()
        assert await eventually(lambda: _all_gone(nats_url, "client", "slow"))
    assert client_in.empty()  # neither the late reply nor the resolve reached on_message
    assert caplog.text.count("its request() gave up waiting") == 2
    assert "handler failed" not in caplog.text


async def _all_gone(url: str, *handles: str) -> bool:
    return all([await stored_for(url, h) == 0 for h in handles])


async def test_replies_to_an_agent_without_a_handler_are_not_errors(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    echo = await mesh_agent("echo")

    @echo.on_message
    async def answer(msg: Message) -> None:
        await echo.send(msg.session, "first")
        await echo.resolve(msg.session, "done")

    client = await mesh_agent("client")  # no on_message: it only opens sessions
    with caplog.at_level(logging.DEBUG, logger="mesh.agent"):
        await client.open_session("echo", "hello")
        assert await eventually(lambda: _all_gone(nats_url, "client", "echo"))
        await asyncio.sleep(0.1)
        client_logs = [r for r in caplog.records if "mesh agent client" in r.getMessage()]
    assert all(r.levelno == logging.DEBUG for r in client_logs)
    assert sum("no on_message handler is set" in r.getMessage() for r in client_logs) == 2

    # Someone opening a session with it is worth a warning: nobody will answer.
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        await echo.open_session("client", "are you there?")
        assert await eventually(lambda: _all_gone(nats_url, "client"))
    assert "mesh agent client: no on_message handler is set; dropped session_open" in caplog.text


async def test_sync_handlers_of_one_session_run_one_at_a_time_in_order(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, max_in_flight=16)
    runs: list[tuple[str, str, float, float]] = []
    lock = threading.Lock()

    @worker.on_message
    def record(msg: Message) -> None:  # a sync handler: runs on a worker thread
        started = time.monotonic()
        time.sleep(0.03)
        with lock:
            runs.append((msg.session, msg.payload, started, time.monotonic()))

    await worker.register()
    sender = await mesh_agent("sender")
    first = await sender.open_session("worker", "a0")
    second = await sender.open_session("worker", "b0")
    for i in range(1, 6):
        await sender.send(first.session, f"a{i}")
        await sender.send(second.session, f"b{i}")
    assert await eventually(lambda: _count(runs, 12))
    for session, prefix in ((first.session, "a"), (second.session, "b")):
        mine = [r for r in runs if r[0] == session]
        assert [r[1] for r in mine] == [f"{prefix}{i}" for i in range(6)]  # delivery order
        assert all(later[2] >= earlier[3] for earlier, later in itertools.pairwise(mine))  # no overlap
    a, b = [r for r in runs if r[0] == first.session], [r for r in runs if r[0] == second.session]
    assert any(x[2] < y[3] and y[2] < x[3] for x in a for y in b)  # the two sessions ran side by side


async def _count(items: list[object], n: int) -> bool:
    return len(items) >= n


VICTIM = """
import asyncio, sys
from mesh import AsyncAgent

async def main(url):
    agent = AsyncAgent("victim", servers=url)   # default heartbeat: 5 s, so 15 s until it expires

    @agent.on_message
    async def handle(msg):
        pass

    async with agent:
        await agent.register()
        print("READY", flush=True)
        await agent.run_forever()

asyncio.run(main(sys.argv[1]))
"""


async def test_a_restarted_agent_takes_its_handle_back_at_once_but_a_second_instance_cannot(
    mesh_agent: Factory, nats_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), nats_url, stdout=asyncio.subprocess.PIPE,
                                                env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"READY"
        # While it lives, neither a second instance (same claim file, locked) nor another agent gets in.
        for options in ({}, {"reclaim": False}):
            twin = await mesh_agent("victim", register=False, **options)
            with pytest.raises(HandleTaken):
                await twin.register()
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (await (await mesh_agent("probe")).introspect("victim")).online  # its heartbeat has not expired
    started = time.monotonic()
    heir = await mesh_agent("victim")  # registers at the first try: the same agent, restarted
    assert heir.is_registered and time.monotonic() - started < 5
    other = await mesh_agent("victim", register=False, reclaim=False)
    with pytest.raises(HandleTaken):
        await other.register()


def test_a_claim_file_is_held_by_one_owner_and_keeps_its_token(tmp_path: Path) -> None:
    path = tmp_path / "claims" / "mesh" / "worker.lock"
    first = ClaimFile(path)
    token = first.acquire()
    assert token is not None and len(token) == 32
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ClaimFile(path).acquire() is None  # locked by a live owner
    first.release()
    again = ClaimFile(path)
    assert again.acquire() == token  # the same agent after a restart
    again.release()
    assert ClaimFile(tmp_path / "made" / "on" / "demand.lock").acquire() is not None
    (tmp_path / "ro").write_text("")
    assert ClaimFile(tmp_path / "ro" / "x.lock").acquire() is None  # unusable: no claim file, no error


async def test_close_takes_a_grace_period_and_the_message_comes_back(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False, drain_timeout=30)
    started = asyncio.Event()

    @worker.on_message
    async def stuck(msg: Message) -> None:
        started.set()
        await asyncio.sleep(3600)

    await worker.register()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "finish me later")
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    await worker.close(grace=0.2)
    assert time.monotonic() - t0 < 3
    successor = await mesh_agent("worker", register=False)
    successor_in = inbox(successor)
    await successor.register()
    assert (await next_msg(successor_in)).message_id == opened.message_id  # nak'ed: delivered again at once


async def test_tailbus_constructor_options_and_nats_url(nats_url: str, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:1, {nats_url}")  # the first is down: the second is used
    with caplog.at_level(logging.DEBUG, logger="mesh.agent"):
        agent = AsyncAgent("tailbus-style", socket=os.environ.get("TAILBUS_SOCKET", "/tmp/tailbusd.sock"),
                           binary="tailbus")
    assert agent._socket == "/tmp/tailbusd.sock"  # tailbus examples print it
    assert "socket='/tmp/tailbusd.sock' binary='tailbus' ignored" in caplog.text
    async with agent:
        await agent.register()
        assert agent.is_connected
    monkeypatch.delenv("NATS_URL")
    assert AsyncAgent("default")._servers == ["nats://127.0.0.1:4222"]
    sync = SyncAgent("sync-style", servers=nats_url, socket="/tmp/x.sock")
    sync.close()


async def test_list_sessions_shows_this_agents_sessions_and_their_state(mesh_agent: Factory) -> None:
    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    b_in = inbox(b)
    opened = await a.open_session("beta", "one", trace_id="t-1")
    other = await a.open_session("beta", "two")
    await next_msg(b_in)
    await next_msg(b_in)
    await b.resolve(opened.session, "done")
    # alpha records the resolve when its inbox delivers it, a moment after beta published it
    for _ in range(200):
        sessions = {s.session: s for s in await a.list_sessions()}
        if sessions.get(opened.session) and sessions[opened.session].state == "resolved":
            break
        await asyncio.sleep(0.05)
    assert set(sessions) == {opened.session, other.session}
    first = sessions[opened.session]
    assert (first.from_handle, first.to_handle, first.state, first.trace_id) == ("alpha", "beta", "resolved", "t-1")
    assert sessions[other.session].state == "open"
    assert {s.session for s in await b.list_sessions()} == {opened.session, other.session}  # received ones too
    loose = await mesh_agent("loose", register=False)
    with pytest.raises(NotRegisteredError):
        await loose.list_sessions()


async def test_tailbus_error_names_catch_mesh_errors(mesh_agent: Factory) -> None:
    assert BridgeError is TailbusError is mesh.MeshError
    assert BridgeDiedError is AgentClosed
    client = await mesh_agent("client")
    with pytest.raises(BridgeError) as info:
        await client.open_session("nobody", "hello")
    assert isinstance(info.value, HandleNotFound)
    assert (info.value.request_type, info.value.error) == ("open", "handle 'nobody' is not registered on the mesh")
    await mesh_agent("silent")
    pending = asyncio.create_task(client.request("silent", "hello", timeout=30))
    await asyncio.sleep(0.2)
    await client.close()
    with pytest.raises(BridgeDiedError):
        await pending
    with pytest.raises(BridgeDiedError):
        await client.send("any", "after close")


async def test_replies_reach_the_handler_only_after_open_session_returned(mesh_agent: Factory,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    echo = await mesh_agent("echo")

    @echo.on_message
    async def answer(msg: Message) -> None:
        await echo.resolve(msg.session, f"echo: {msg.payload}")

    caller = await mesh_agent("caller")
    pending: dict[str, asyncio.Future[str]] = {}
    strays: list[Message] = []

    @caller.on_message
    async def on_reply(msg: Message) -> None:  # tailbus examples' delegate(): files the session after the open
        fut = pending.pop(msg.session, None)
        if fut is None:
            strays.append(msg)
        else:
            fut.set_result(msg.payload)

    assert caller._outbox is not None
    outbox = caller._outbox
    opened_at: list[float] = []
    real_open = outbox.open

    async def slow_open(*args: object, **kwargs: object) -> mesh.Opened:
        result = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)  # the publish acknowledged late: the echo's answer is already here
        opened_at.append(time.monotonic())
        return result

    monkeypatch.setattr(outbox, "open", slow_open)
    opened = await caller.open_session("echo", "hi")
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    pending[opened.session] = fut
    assert await asyncio.wait_for(fut, 10) == "echo: hi"
    assert strays == []
