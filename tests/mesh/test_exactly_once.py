"""Exactly once across retries, and no lost replies (issue 14 item 11, issue 10 item 6).

* A send retried with the same ``message_id`` (the SDK's own publish retry, a caller's retry after a
  timeout, a reconnect or a nats-server restart, or a second stored copy past JetStream's duplicate
  window) reaches the recipient's handler once.
* A recipient that dies after recording its resolve but before publishing it answers on redelivery with
  the recorded resolve (same message id), so ``request()`` gets its answer instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from mesh import AsyncAgent, Envelope, MeshTimeout, Message, NatsServer, encode_envelope
from mesh.handles import inbox_subject
from mesh.sessions import session_for
from tests.conftest import DaemonFactory
from tests.mesh.helpers import Factory, eventually, inbox, next_msg

REPO = Path(__file__).resolve().parents[2]


def counting(agent: AsyncAgent) -> list[Message]:
    seen: list[Message] = []

    @agent.on_message
    async def handle(msg: Message) -> None:
        seen.append(msg)
        if msg.message_type == "session_open":
            await agent.resolve(msg.session, f"got {msg.payload}")

    return seen


async def test_open_session_again_with_the_same_message_id_is_one_send(mesh_agent: Factory) -> None:
    worker = await mesh_agent("worker", register=False)
    seen = counting(worker)
    await worker.register()
    client = await mesh_agent("client")
    first = await client.open_session("worker", "report 1", message_id="report-1")
    again = await client.open_session("worker", "report 1", message_id="report-1")
    assert (again.session, again.message_id, again.trace_id) == (first.session, first.message_id, first.trace_id)
    assert first.session == session_for("client", "report-1")
    other = await client.open_session("worker", "report 2", message_id="report-2")
    assert await eventually(lambda: _count(seen, 2))
    await asyncio.sleep(0.3)
    assert [m.message_id for m in seen] == ["report-1", "report-2"]
    assert other.session != first.session
    with pytest.raises(ValueError):
        await client.open_session("worker", "x", message_id="")


async def test_two_senders_may_choose_the_same_message_id(mesh_agent: Factory) -> None:
    # JetStream de-duplicates by Nats-Msg-Id across the whole stream: with the bare message id as the
    # header, b's open was acknowledged as a duplicate of a's and never stored (open_session returned
    # normally, the worker never got it). The header is scoped by the sender.
    worker = await mesh_agent("worker", register=False)
    seen = counting(worker)
    await worker.register()
    a, b = await mesh_agent("a"), await mesh_agent("b")
    from_a = await a.open_session("worker", "from a", message_id="report-1")
    from_b = await b.open_session("worker", "from b", message_id="report-1")
    assert from_a.session != from_b.session
    assert await eventually(lambda: _count(seen, 2))
    assert sorted((m.from_handle, m.payload) for m in seen) == [("a", "from a"), ("b", "from b")]
    # The id travels in a NATS header: a line break (or any control character) is refused before anything
    # is published.
    for bad in ("x\r\nNats-Expected-Stream: OTHER", "tab\there", "x" * 129):
        with pytest.raises(ValueError, match="message_id"):
            await a.open_session("worker", "bad", message_id=bad)
    await asyncio.sleep(0.3)
    assert len(seen) == 2


async def test_a_second_copy_past_the_duplicate_window_is_dropped(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker", register=False)
    seen = counting(worker)
    await worker.register()
    client = await mesh_agent("client")
    opened = await client.open_session("worker", "once", message_id="m-1")
    assert await eventually(lambda: _count(seen, 1))
    # The same open stored again under another Nats-Msg-Id: what JetStream lets through once its 2-minute
    # duplicate window has passed.
    copy = Envelope(message_id="m-1", session_id=opened.session, from_handle="client", to_handle="worker",
                    payload="once", content_type="text/plain", sent_at=time.time(), type="session_open",
                    trace_id=opened.trace_id, sequence=1)
    nc = await nats.connect(nats_url)
    with caplog.at_level(logging.DEBUG, logger="mesh.agent"):
        await nc.jetstream().publish(inbox_subject("worker", "client"), encode_envelope(copy),
                                     headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await nc.close()
        assert await eventually(lambda: _logged(caplog, "another copy of the open m-1, received before"))
    assert len(seen) == 1


async def test_the_sdks_own_publish_retry_is_stored_once(mesh_agent: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = await mesh_agent("worker", register=False)
    seen = counting(worker)
    await worker.register()
    client = await mesh_agent("client")
    assert client._js is not None
    js = client._js
    real = js.publish
    calls: list[str] = []

    async def flaky(subject: str, payload: bytes = b"", **kwargs: Any) -> Any:
        ack = await real(subject, payload, **kwargs)
        if subject.startswith("mesh.inbox."):
            calls.append(subject)
            if len(calls) == 1:
                raise nats.errors.TimeoutError  # stored, but the acknowledgement was lost
        return ack

    monkeypatch.setattr(js, "publish", flaky)
    reply = await client.request("worker", "retried", timeout=15)
    assert reply.payload == "got retried" and len(calls) >= 2
    await asyncio.sleep(0.3)
    assert len(seen) == 1


async def test_a_retry_across_a_server_restart_is_one_report(nats_server: NatsServer, make_daemon: DaemonFactory,
                                                             mesh_agent: Factory) -> None:
    memory = await mesh_agent("memory")
    await memory.close()  # @memory is registered but down: the report waits in its inbox
    reporter = await mesh_agent("reporter", register=False)
    replies = inbox(reporter)
    await reporter.register()
    report = '{"event": "rollback", "service": "api"}'
    first = await reporter.open_session("memory", report, content_type="application/json", message_id="rb-7")
    await asyncio.to_thread(nats_server.stop)
    await asyncio.to_thread(nats_server.start)
    for _ in range(100):  # the caller is not sure the first went out: it sends again, with the same id
        try:
            again = await reporter.open_session("memory", report, content_type="application/json",
                                                message_id="rb-7")
            break
        except MeshTimeout:
            await asyncio.sleep(0.2)
    assert again.session == first.session
    daemon = await make_daemon(nats_server.url)
    reply = await next_msg(replies, timeout=30)
    assert '"status": "stored"' in reply.payload and '"duplicate": false' in reply.payload
    await asyncio.sleep(1.0)
    assert replies.empty()
    assert len(await daemon.store.select(None, _no_filters())) == 1


async def test_a_retried_request_gets_the_answer_its_first_attempt_missed(mesh_agent: Factory) -> None:
    slow = await mesh_agent("slow", register=False)
    release = asyncio.Event()
    opens: list[str] = []

    @slow.on_message
    async def answer(msg: Message) -> None:
        opens.append(msg.message_id)
        await release.wait()
        await slow.resolve(msg.session, "worth the wait")

    await slow.register()
    client = await mesh_agent("client")
    with pytest.raises(MeshTimeout):
        await client.request("slow", "question", message_id="q-1", timeout=0.3)
    release.set()
    await asyncio.sleep(0.5)  # the answer arrives after the first request() gave up
    reply = await client.request("slow", "question", message_id="q-1", timeout=10)
    assert (reply.payload, reply.from_handle) == ("worth the wait", "slow")
    assert opens == ["q-1"]


RESPONDER = """
import asyncio, os, sys
import mesh.sender
from mesh import AsyncAgent

async def main(url, crash):
    agent = AsyncAgent("responder", servers=url, ack_wait=1.0, heartbeat_interval=0.5)
    if crash:
        real = mesh.sender.Sender._publish

        async def publish(self, env, manifest):
            if env.type == "session_resolve":  # the resolve is recorded; die before it is published
                print("RECORDED", env.message_id, flush=True)
                os._exit(17)
            await real(self, env, manifest)

        mesh.sender.Sender._publish = publish

    @agent.on_message
    async def handle(msg):
        print("HANDLING", msg.message_id, flush=True)
        await agent.resolve(msg.session, "answer to " + msg.payload)

    async with agent:
        await agent.register()
        print("READY", flush=True)
        await agent.run_forever()

asyncio.run(main(sys.argv[1], sys.argv[2] == "crash"))
"""


async def _line(proc: asyncio.subprocess.Process, prefix: str, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    stdout = proc.stdout

    async def read() -> str:
        while True:
            line = (await stdout.readline()).decode()
            if not line:
                raise AssertionError(f"process exited (code {proc.returncode}) before printing {prefix}")
            if line.startswith(prefix):
                return line.strip()

    return await asyncio.wait_for(read(), timeout)


async def _spawn(script: Path, url: str, mode: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return await asyncio.create_subprocess_exec(sys.executable, str(script), url, mode,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO)


async def test_a_responder_killed_between_recording_and_publishing_its_resolve_still_answers(
    mesh_agent: Factory, nats_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "responder.py"
    script.write_text(RESPONDER)
    procs = [await _spawn(script, nats_url, "crash")]
    try:
        await _line(procs[0], "READY")
        client = await mesh_agent("client")
        pending = asyncio.create_task(client.request("responder", "q-1", timeout=60))
        recorded = (await _line(procs[0], "RECORDED")).split()[1]
        assert await asyncio.wait_for(procs[0].wait(), 10) == 17
        # Restarted (a supervisor would): the same agent on the same host takes its handle back at once;
        # the unacknowledged open comes back after ack_wait and is answered with the recorded resolve.
        procs.append(await _spawn(script, nats_url, "normal"))
        await _line(procs[1], "READY")
        reply = await asyncio.wait_for(pending, 60)
        assert (reply.message_type, reply.payload) == ("session_resolve", "answer to q-1")
        assert reply.message_id == recorded  # the resolve recorded before the crash, published now
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_resolving_twice_outside_a_redelivery_is_still_refused(mesh_agent: Factory) -> None:
    from mesh import SessionClosed

    a = await mesh_agent("alpha")
    b = await mesh_agent("beta")
    b_in = inbox(b)
    opened = await a.open_session("beta", "hi")
    await next_msg(b_in)
    first = await b.resolve(opened.session, "bye")
    with pytest.raises(SessionClosed):
        await b.resolve(opened.session, "bye again")
    assert first.sequence == 2


def _count(items: list[Any], n: int) -> Any:
    async def check() -> bool:
        return len(items) >= n

    return check()


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return text in caplog.text


def _no_filters() -> Any:
    from memory_agent.types import Filters

    return Filters()
