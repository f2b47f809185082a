"""NATS authentication through [nats] config, against real nats-servers configured for each kind: token,
user/password, NKey seed, .creds (JWT operator mode), TLS with a CA, and TLS with client certificates.

For each, the config is read from a TOML file (secrets from an environment variable or a file), the real
daemon joins the mesh with it, the CLI's client reports and asks with it, and wrong or missing
credentials are refused at once with AuthenticationError (not retried forever)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from memory_agent.client import MemoryClient
from memory_agent.config import load_config
from memory_agent.errors import ConfigError
from mesh import AsyncAgent, AuthenticationError, NatsAuth
from tests.conftest import DaemonFactory
from tests.security.conftest import ServerFactory
from tests.security.credentials import make_tls, new_nkey, operator_mode


@dataclass
class Case:
    """A server config, the [nats] TOML lines that pass it, and NatsAuth values it must refuse."""

    server: str
    toml: str
    url_scheme: str = "nats"
    wrong: tuple[NatsAuth | None, ...] = ()


def token_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    token = f"tok-{uuid.uuid4().hex}$x"  # a '$' must survive the server config
    monkeypatch.setenv("TEST_NATS_TOKEN", token)
    return Case(server=f'authorization {{ token: "{token}" }}\n', toml='token_env = "TEST_NATS_TOKEN"\n',
                wrong=(None, NatsAuth(token="not-the-token")))


def user_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    password = uuid.uuid4().hex
    (tmp / "password").write_text(password + "\n")
    return Case(server=f'authorization {{ users: [{{user: "memory", password: "{password}"}}] }}\n',
                toml=f'user = "memory"\npassword_file = "{tmp / "password"}"\n',
                wrong=(None, NatsAuth(user="memory", password="wrong")))


def nkey_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    key, stranger = new_nkey(), new_nkey()
    return Case(server=f'authorization {{ users: [{{nkey: "{key.public}"}}] }}\n',
                toml=f'nkey_seed_file = "{key.write_seed(tmp / "memory.nk")}"\n',
                wrong=(None, NatsAuth(nkey_seed_file=stranger.write_seed(tmp / "stranger.nk"))))


def creds_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    config, creds = operator_mode(tmp, ["memory"])
    (tmp / "other").mkdir()
    _, foreign = operator_mode(tmp / "other", ["memory"])  # signed by an operator this server does not trust
    return Case(server=config, toml=f'creds_file = "{creds["memory"]}"\n',
                wrong=(None, NatsAuth(creds_file=foreign["memory"])))


def tls_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    tls, other = make_tls(tmp, "mesh"), make_tls(tmp, "other")
    monkeypatch.setenv("TEST_NATS_PASSWORD", "over-tls")
    return Case(
        server=(f'tls {{ cert_file: "{tls.server_cert}", key_file: "{tls.server_key}" }}\n'
                'authorization { users: [{user: "memory", password: "over-tls"}] }\n'),
        toml=f'user = "memory"\npassword_env = "TEST_NATS_PASSWORD"\ntls_ca = "{tls.ca}"\n',
        url_scheme="tls",
        # the right password, but trusting another CA: the server's certificate is rejected
        wrong=(NatsAuth(user="memory", password="over-tls", tls_ca=other.ca),),
    )


def mutual_tls_case(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    tls, other = make_tls(tmp, "mesh"), make_tls(tmp, "other")
    return Case(
        server=(f'tls {{ cert_file: "{tls.server_cert}", key_file: "{tls.server_key}", '
                f'ca_file: "{tls.ca}", verify: true }}\n'),
        toml=f'tls_ca = "{tls.ca}"\ntls_cert = "{tls.client_cert}"\ntls_key = "{tls.client_key}"\n',
        url_scheme="tls",
        wrong=(NatsAuth(tls_ca=tls.ca),  # no client certificate
               NatsAuth(tls_ca=tls.ca, tls_cert=other.client_cert, tls_key=other.client_key)),  # unknown CA
    )


CASES: dict[str, Callable[[Path, pytest.MonkeyPatch], Case]] = {
    "token": token_case,
    "user-password": user_case,
    "nkey": nkey_case,
    "creds": creds_case,
    "tls-ca": tls_case,
    "tls-client-cert": mutual_tls_case,
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_daemon_and_client_authenticate_and_wrong_credentials_are_refused(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_with: ServerFactory, make_daemon: DaemonFactory
) -> None:
    case = CASES[kind](tmp_path, monkeypatch)
    server = nats_with(case.server)
    url = server.url.replace("nats://", f"{case.url_scheme}://")
    config_path = tmp_path / "memory.toml"
    config_path.write_text(f'nats_url = "{url}"\ndata_dir = "{tmp_path / "data"}"\n[nats]\n{case.toml}')
    cfg = load_config(config_path)
    auth = cfg.nats.auth()
    assert auth is not None and "tok-" not in repr(auth) and "over-tls" not in repr(auth)  # secrets never in repr

    daemon = await make_daemon(url, nats=cfg.nats)
    async with MemoryClient(url, auth=auth, client_handle="deploy") as client:
        stored = await client.report({"event": "rollback", "service": "api-gateway"}, trace_id="t-auth")
        assert stored["status"] == "stored"
        assert (await client.stats())["events"] == 1
    assert [e.from_handle for e in await daemon.store.get([stored["id"]])] == ["deploy"]

    for wrong in case.wrong:
        started = time.monotonic()
        agent = AsyncAgent("intruder", servers=url, auth=wrong)
        with pytest.raises(AuthenticationError) as refused:
            await agent.start()
        assert time.monotonic() - started < 10  # refused at once, not retried forever
        assert refused.value.servers == [url]
        await agent.close()


async def test_a_daemon_with_wrong_credentials_does_not_start(
    tmp_path: Path, nats_with: ServerFactory, make_daemon: DaemonFactory
) -> None:
    server = nats_with('authorization { token: "right" }\n')
    (tmp_path / "token").write_text("wrong\n")
    with pytest.raises(AuthenticationError, match="Authorization Violation"):
        await make_daemon(server.url, nats={"token_file": str(tmp_path / "token")})


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('token_env = "TEST_UNSET_VARIABLE"\n', "TEST_UNSET_VARIABLE, which is not set"),
        ('token_file = "/nonexistent/token"\n', "cannot be read"),
        ('user = "memory"\n', "no password"),
        ('password_env = "HOME"\n', "nats.user is empty"),
    ],
)
def test_missing_secrets_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, says: str) -> None:
    monkeypatch.delenv("TEST_UNSET_VARIABLE", raising=False)
    path = tmp_path / "c.toml"
    path.write_text("[nats]\n" + toml)
    with pytest.raises(ConfigError, match=says):
        load_config(path).nats.auth()


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('token_env = "A"\ncreds_file = "x.creds"\n', "not token and creds_file"),
        ('tls_cert = "c.pem"\n', "tls_cert and tls_key go together"),
        ('token_env = "A"\ntoken_file = "t"\n', "both set"),
    ],
)
def test_contradictory_nats_options_are_refused_when_the_config_is_read(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[nats]\n" + toml)
    with pytest.raises(ConfigError, match=says):
        load_config(path)


async def test_the_embedded_server_requires_the_configured_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_daemon: DaemonFactory
) -> None:
    monkeypatch.setenv("TEST_NATS_TOKEN", "embedded-secret")
    daemon = await make_daemon("", embedded_nats_port=0, nats={"token_env": "TEST_NATS_TOKEN"})
    config = (tmp_path / "data" / "nats" / "nats-server.conf")
    assert config.stat().st_mode & 0o077 == 0  # the file holding the token is private
    with pytest.raises(AuthenticationError):
        await AsyncAgent("intruder", servers=daemon.nats_url).start()
    async with MemoryClient(daemon.nats_url, auth=NatsAuth(token="embedded-secret")) as client:
        assert (await client.stats())["handle"] == "memory"


async def test_an_embedded_server_cannot_do_tls_and_says_so(tmp_path: Path, make_daemon: DaemonFactory) -> None:
    tls = make_tls(tmp_path)
    with pytest.raises(ConfigError, match="run a nats-server configured for them"):
        await make_daemon("", embedded_nats_port=0, nats={"tls_ca": str(tls.ca)})
