"""The SDK's side of security: credentials (NatsAuth), servers that require them, refusals that surface at
once (AuthenticationError, PermissionDenied), and the sender check on mesh.inbox.<to>.<from>."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import nats
import pytest

from mesh import (
    AsyncAgent,
    AuthenticationError,
    Envelope,
    MeshError,
    NatsAuth,
    NatsServer,
    PermissionDenied,
    ServerError,
    encode_envelope,
)
from mesh.constants import STREAM_NAME
from mesh.handles import durable_name, inbox_filter, inbox_subject, parse_inbox_subject
from mesh.server import auth_config
from tests.mesh.helpers import Factory, inbox, next_msg
from tests.security.credentials import new_nkey


def test_inbox_subjects_name_recipient_then_sender() -> None:
    assert inbox_subject("memory", "deploy") == "mesh.inbox.memory.deploy"
    assert inbox_filter("memory") == "mesh.inbox.memory.*"
    assert parse_inbox_subject("mesh.inbox.memory.deploy") == ("memory", "deploy")
    for bad in ("mesh.inbox.memory", "mesh.inbox.memory.deploy.x", "mesh.inbox.Memory.deploy", "other.memory.x"):
        assert parse_inbox_subject(bad) is None


def test_nats_auth_checks_its_options_and_hides_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not token and user/password"):
        NatsAuth(token="t", user="u", password="p")
    with pytest.raises(ValueError, match="user and password go together"):
        NatsAuth(user="u")
    with pytest.raises(ValueError, match="tls_cert and tls_key together"):
        NatsAuth(tls_cert=tmp_path / "c.pem")
    auth = NatsAuth(user="memory", password="hunter2")
    assert "hunter2" not in repr(auth) and auth.method == "user"
    assert auth.connect_options() == {"user": "memory", "password": "hunter2"}
    assert NatsAuth(token="s3cret").connect_options() == {"token": "s3cret"}
    assert "s3cret" not in repr(NatsAuth(token="s3cret"))
    with pytest.raises(MeshError, match=r"creds_file .* does not exist"):
        NatsAuth(creds_file=tmp_path / "missing.creds").connect_options()


def test_embedded_server_config_holds_only_what_it_needs(tmp_path: Path) -> None:
    key = new_nkey()
    block = auth_config(NatsAuth(nkey_seed_file=key.write_seed(tmp_path / "a.nk")))
    assert key.public in block and key.seed not in block  # the server gets the public key only
    assert 'users: [{user: "u", password: "p\\"w"}]' in auth_config(NatsAuth(user="u", password='p"w'))
    with pytest.raises(ServerError, match="token, user/password or NKey"):
        auth_config(NatsAuth(creds_file=tmp_path / "x.creds"))


@pytest.mark.parametrize("kind", ["token", "user", "nkey"])
async def test_an_embedded_server_accepts_exactly_its_credentials(tmp_path: Path, kind: str) -> None:
    if kind == "token":
        auth, wrong = NatsAuth(token="t0k$en"), NatsAuth(token="other")
    elif kind == "user":
        auth, wrong = NatsAuth(user="deploy", password="pw"), NatsAuth(user="deploy", password="nope")
    else:
        auth = NatsAuth(nkey_seed_file=new_nkey().write_seed(tmp_path / "right.nk"))
        wrong = NatsAuth(nkey_seed_file=new_nkey().write_seed(tmp_path / "wrong.nk"))
    with NatsServer(store_dir=tmp_path / "nats", auth=auth) as server:
        assert (tmp_path / "nats" / "nats-server.conf").stat().st_mode & 0o777 == 0o600
        async with AsyncAgent("a", servers=server.url, auth=auth) as a, \
                AsyncAgent("b", servers=server.url, auth=auth) as b:
            await a.register()
            b_in = inbox(b)
            await b.register()
            opened = await a.open_session("b", "hello")
            assert (await next_msg(b_in)).message_id == opened.message_id
        for refused in (wrong, None):
            started = time.monotonic()
            agent = AsyncAgent("c", servers=server.url, auth=refused)
            with pytest.raises(AuthenticationError) as err:
                await agent.start()
            await agent.close()
            assert time.monotonic() - started < 5 and err.value.servers == [server.url]


async def test_a_publish_the_server_denies_raises_permission_denied_at_once(tmp_path: Path) -> None:
    # "a" may send to b but not to c; everything else an agent needs is allowed.
    config = tmp_path / "server.conf"
    config.write_text('authorization { users: [\n'
                      '  {user: a, password: a, permissions: {publish: {deny: ["mesh.inbox.c.>"]}}}\n'
                      '  {user: b, password: b}\n]}\n')
    with NatsServer(store_dir=tmp_path / "nats", config_file=config) as server:
        async with AsyncAgent("a", servers=server.url, auth=NatsAuth(user="a", password="a")) as a, \
                AsyncAgent("b", servers=server.url, auth=NatsAuth(user="b", password="b")) as b, \
                AsyncAgent("c", servers=server.url, auth=NatsAuth(user="b", password="b")) as c:
            for agent in (a, b, c):
                await agent.register()
            await a.open_session("b", "allowed")
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as denied:
                await a.open_session("c", "not allowed")
            assert time.monotonic() - started < 3  # not three 5 s publish timeouts
            assert (denied.value.handle, denied.value.operation, denied.value.subject) == \
                ("a", "publish", "mesh.inbox.c.a")


async def test_an_envelope_that_names_another_sender_than_its_subject_is_rejected(
    mesh_agent: Factory, nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await mesh_agent("worker", register=False)
    worker_in = inbox(worker)
    await worker.register()
    forged = Envelope(message_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()), from_handle="admin",
                      to_handle="worker", payload="trust me", content_type="text/plain", sent_at=time.time(),
                      type="session_open", trace_id="t", sequence=1)
    nc = await nats.connect(nats_url)
    with caplog.at_level(logging.WARNING, logger="mesh.agent"):
        await nc.jetstream().publish(inbox_subject("worker", "mallory"), encode_envelope(forged))
        await nc.close()
        sender = await mesh_agent("sender")
        opened = await sender.open_session("worker", "real")
        got = await next_msg(worker_in)
    assert got.message_id == opened.message_id and got.from_handle == "sender"
    assert worker_in.empty()
    assert "sent on mesh.inbox.worker.mallory but the envelope says from admin" in caplog.text


async def test_an_inbox_made_by_the_previous_subject_layout_is_taken_over(mesh_agent: Factory, nats_url: str) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    await mesh_agent("bootstrap", register=False)  # started: creates the stream
    nc = await nats.connect(nats_url)
    name = durable_name("worker")
    await nc.jetstream().add_consumer(STREAM_NAME, ConsumerConfig(
        name=name, durable_name=name, filter_subject="mesh.inbox.worker", deliver_subject="mesh.deliver.worker",
        deliver_group="worker", ack_policy=AckPolicy.EXPLICIT))
    worker = await mesh_agent("worker", register=False)
    worker_in = inbox(worker)
    await worker.register()
    info = await nc.jetstream().consumer_info(STREAM_NAME, name)
    await nc.close()
    assert info.config.filter_subject == "mesh.inbox.worker.*"
    sender = await mesh_agent("sender")
    opened = await sender.open_session("worker", "after the upgrade")
    assert (await next_msg(worker_in)).message_id == opened.message_id
