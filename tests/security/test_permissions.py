"""examples/nats-server.conf on a real nats-server: agents can talk to @memory, but cannot read its inbox
or speak as another handle, and @memory records the sender's handle as authenticated.

The example is used as shipped; only its listen address, store directory and the four example public
keys are replaced (by keys whose seeds this test makes)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from memory_agent.client import MemoryClient
from memory_agent.daemon import MemoryDaemon
from mesh import AsyncAgent, Envelope, NatsAuth, PermissionDenied, encode_envelope, find_nats_server
from mesh.constants import STREAM_NAME
from mesh.handles import inbox_subject
from mesh.server import NatsServer
from tests.conftest import DaemonFactory
from tests.security.credentials import NKey, new_nkey

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nats-server.conf"
HANDLES = ("memory", "deploy", "monitor", "ops")


def render_example(directory: Path) -> tuple[Path, dict[str, NKey]]:
    """The example config with fresh keys and a free port (NatsServer gives the store directory)."""
    text = EXAMPLE.read_text()
    keys = {handle: new_nkey() for handle in HANDLES}
    for handle, key in keys.items():
        text, n = re.subn(rf'^{handle.upper()}_KEY:\s*"U[A-Z0-9]+"', f'{handle.upper()}_KEY: "{key.public}"', text,
                          flags=re.MULTILINE)
        assert n == 1, f"{handle.upper()}_KEY not found in {EXAMPLE}"
    text, n = re.subn(r'^listen: "127\.0\.0\.1:4222"', 'listen: "127.0.0.1:-1"', text, flags=re.MULTILINE)
    assert n == 1
    text, n = re.subn(r'^\s*store_dir: "\./nats-data"\n', "", text, flags=re.MULTILINE)  # NatsServer passes -sd
    assert n == 1
    path = directory / "nats-server.conf"
    path.write_text(text)
    return path, keys


def test_the_example_config_is_valid_as_shipped() -> None:
    done = subprocess.run([find_nats_server(), "-t", "-c", str(EXAMPLE)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def locked_down(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, NatsAuth]]]:
    """A nats-server running examples/nats-server.conf, and each example user's NatsAuth."""
    path, keys = render_example(tmp_path)
    server = NatsServer(store_dir=tmp_path / "store", config_file=path)
    server.start()
    auths = {h: NatsAuth(nkey_seed_file=k.write_seed(tmp_path / f"{h}.nk")) for h, k in keys.items()}
    try:
        yield server, auths
    finally:
        server.stop()


class Intruder:
    """A raw nats-py connection with some agent's credentials, recording the server's refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def connect(self, url: str, auth: NatsAuth, handle: str) -> NATS:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(url, error_cb=on_error, inbox_prefix=f"_INBOX.{handle}",
                                     **auth.connect_options())
        return self.nc

    async def denied(self, what: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False


async def _stored_handles(daemon: MemoryDaemon) -> list[tuple[str, bool, str]]:
    events = await daemon.store.select(None, _no_filters())
    return [(e.from_handle, e.sender_verified, e.event) for e in events]


def _no_filters() -> Any:
    from memory_agent.types import Filters

    return Filters()


async def test_agents_reach_memory_but_cannot_read_its_inbox_or_speak_for_another_handle(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]], make_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.agent")
    server, auths = locked_down
    url = server.url
    daemon = await make_daemon(url, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                             security={"authenticated_senders": True, "admins": ["ops"]})
    deploy = AsyncAgent("deploy", servers=url, auth=auths["deploy"])
    monitor = AsyncAgent("monitor", servers=url, auth=auths["monitor"])
    spy = Intruder()
    try:
        async with deploy, monitor:
            await deploy.register()
            await monitor.register()

            # Allowed: deploy reports to @memory and gets the reply; it is stored as authenticated.
            reply = await deploy.request("memory", json.dumps({"event": "rollback", "service": "api"}), timeout=15)
            assert json.loads(reply.payload)["status"] == "stored"
            assert await _stored_handles(daemon) == [("deploy", True, "rollback")]

            # (a) deploy's credentials cannot consume @memory's inbox ...
            nc = await spy.connect(url, auths["deploy"], "deploy")
            stolen: asyncio.Queue[Any] = asyncio.Queue()
            await nc.subscribe("mesh.deliver.memory.>", queue="memory", cb=stolen.put)
            await nc.flush()
            assert await spy.denied('Subscription to "mesh.deliver.memory.>"')
            js = nc.jetstream(timeout=1.0)
            with pytest.raises(nats.errors.TimeoutError):  # the request never reaches JetStream
                await js.add_consumer(STREAM_NAME, ConsumerConfig(
                    name="spy", durable_name="spy", filter_subject="mesh.inbox.memory.*",
                    deliver_subject="_INBOX.deploy.spy", ack_policy=AckPolicy.EXPLICIT))
            assert await spy.denied("$JS.API.CONSUMER.CREATE.MESH_INBOX.spy.mesh.inbox.memory.*")
            with pytest.raises(nats.errors.TimeoutError):
                await js.get_msg(STREAM_NAME, seq=1)
            assert await spy.denied("$JS.API.STREAM.MSG.GET.MESH_INBOX")
            with pytest.raises(nats.errors.TimeoutError):
                await js.purge_stream(STREAM_NAME)
            assert await spy.denied("$JS.API.STREAM.PURGE.MESH_INBOX")

            # (b) ... nor publish as another handle: not on monitor's subject ...
            forged = Envelope(message_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), from_handle="monitor",
                              to_handle="memory", payload=json.dumps({"event": "forged_by_deploy"}),
                              content_type="application/json", sent_at=time.time(), type="session_open",
                              trace_id="t-forged", sequence=1)
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish(inbox_subject("memory", "monitor"), encode_envelope(forged), timeout=1.0)
            assert await spy.denied('Publish to "mesh.inbox.memory.monitor"')
            # ... and an envelope that claims monitor on deploy's own subject is thrown away by @memory.
            await js.publish(inbox_subject("memory", "deploy"), encode_envelope(forged), timeout=5.0)
            # ... nor act as another handle through the SDK, which says so at once: not even receive
            # the JetStream API's answers on monitor's reply inboxes ...
            twin = AsyncAgent("monitor", servers=url, auth=auths["deploy"])
            with pytest.raises(PermissionDenied) as denied:
                await twin.start()
            assert denied.value.operation == "subscribe" and denied.value.subject == "_INBOX.monitor.>"
            await twin.close()
            # ... and, with its own reply inboxes, not claim another handle in the registry.
            impostor = AsyncAgent("ops", servers=url, auth=auths["deploy"],
                                  connect_options={"inbox_prefix": "_INBOX.deploy"})
            with pytest.raises(PermissionDenied) as denied:
                await impostor.register()
            assert denied.value.subject == "$KV.mesh_registry.ops" and denied.value.operation == "publish"
            await impostor.close()

            # monitor's real report still arrives, goes only to @memory, and is stored as monitor's.
            reply = await monitor.request("memory", json.dumps({"event": "anomaly"}), timeout=15)
            assert json.loads(reply.payload)["status"] == "stored"
            assert stolen.empty()
            assert await _stored_handles(daemon) == [("deploy", True, "rollback"), ("monitor", True, "anomaly")]
            assert f"rejected message {forged.message_id}" in caplog.text
            assert "sent on mesh.inbox.memory.deploy but the envelope says from monitor" in caplog.text

    finally:
        if spy.nc is not None:
            await spy.nc.close()


async def test_only_admins_may_forget_and_the_admin_check_uses_the_authenticated_handle(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]], make_daemon: DaemonFactory
) -> None:
    server, auths = locked_down
    daemon = await make_daemon(server.url, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                             security={"authenticated_senders": True, "admins": ["ops"]})
    async with MemoryClient(server.url, auth=auths["deploy"], client_handle="deploy") as deploy:
        stored = await deploy.report({"event": "deploy", "service": "billing"}, trace_id="t-keep")
        refused = await deploy.forget(trace_id="t-keep")
    assert refused["status"] == "error" and "@deploy may not forget" in refused["error"]
    async with MemoryClient(server.url, auth=auths["ops"], client_handle="ops") as ops:
        assert await ops.forget(trace_id="t-keep") == {"status": "forgotten", "count": 1}
    assert await daemon.store.get([stored["id"]]) == []
