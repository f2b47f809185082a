"""The README's "Running in production" setup as a user runs it: examples/nats-server.conf, `memory-agent run`
as a process with the real MiniLM model and NKey credentials, and the CLI as different NATS users."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.server import NatsServer
from tests.security.test_permissions import render_example

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def toml_file(path: Path, url: str, seed: Path, *, extra: str = "", client_handle: str = "") -> Path:
    path.write_text(f'nats_url = "{url}"\ndata_dir = "{path.parent / "data"}"\n{extra}'
                    f'[nats]\nnkey_seed_file = "{seed}"\nclient_handle = "{client_handle}"\n')
    return path


def cli(*args: str, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memory_agent", *args, "--config", str(config)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Path], dict[str, str]]]:
    """A locked-down nats-server, `memory-agent run` on it, and a CLI config per NATS user."""
    directory = tmp_path_factory.mktemp("production")
    path, keys = render_example(directory)
    server = NatsServer(store_dir=directory / "store", config_file=path)
    server.start()
    seeds = {h: k.write_seed(directory / f"{h}.nk") for h, k in keys.items()}
    (directory / "memory").mkdir()
    memory_cfg = toml_file(directory / "memory" / "memory.toml", server.url, seeds["memory"],
                           extra="[security]\nadmins = [\"ops\"]\nauthenticated_senders = true\n")
    configs = {"memory": memory_cfg}
    for handle in ("deploy", "ops"):
        (directory / handle).mkdir()
        configs[handle] = toml_file(directory / handle / "cli.toml", server.url, seeds[handle], client_handle=handle)
    (directory / "impostor").mkdir()
    configs["impostor"] = toml_file(directory / "impostor" / "cli.toml", server.url, seeds["deploy"],
                                    client_handle="ops")
    with socket.socket() as sock:  # a fixed free port, so `memory-agent check` finds the daemon's /readyz
        sock.bind(("127.0.0.1", 0))
        http_port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "MEMORY_AGENT_HTTP__LISTEN": f"127.0.0.1:{http_port}"}
    proc = subprocess.Popen([sys.executable, "-m", "memory_agent", "run", "--config", str(memory_cfg)], env=env,
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "Agents connect to" in line:
            break
    assert any("Agents connect to" in line for line in lines), "daemon did not come up:\n" + "".join(lines)
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
    try:
        yield configs, env
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()


def test_agents_report_as_themselves_and_only_the_admin_forgets(
    production: tuple[dict[str, Path], dict[str, str]]
) -> None:
    configs, env = production
    done = cli("report", '{"event": "rollback", "service": "api-gateway", "reason": "error spike"}',
               "--trace-id", "t-prod", config=configs["deploy"], env=env)
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    assert stored["status"] == "stored"

    done = cli("ask", "What rollbacks happened in the last 7 days?", "--json", config=configs["ops"], env=env)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    assert [(e["id"], e["from_handle"], e["sender_verified"]) for e in events] == [(stored["id"], "deploy", True)]

    done = cli("forget", "--trace-id", "t-prod", config=configs["deploy"], env=env)
    assert done.returncode == 1 and "@deploy may not forget" in done.stdout

    # deploy's NATS user cannot pass itself off as ops: the server refuses, the CLI says so.
    done = cli("forget", "--trace-id", "t-prod", config=configs["impostor"], env=env)
    assert done.returncode == 1 and "PermissionDenied" in done.stderr and "_INBOX.ops" in done.stderr

    done = cli("forget", "--trace-id", "t-prod", config=configs["ops"], env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "forgotten", "count": 1}
    done = cli("stats", "--json", config=configs["ops"], env=env)
    assert json.loads(done.stdout)["events"] == 0
    assert re.search(r'"size": 0', done.stdout)


def test_readiness_and_the_inbox_metrics_work_under_per_user_permissions(
    production: tuple[dict[str, Path], dict[str, str]]
) -> None:
    """The inbox watcher reads @memory's consumer with @memory's own NATS user, as the example config allows."""
    configs, env = production
    done = cli("check", config=configs["ops"], env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok: @memory ready"), done.stderr
    url = f"http://{env['MEMORY_AGENT_HTTP__LISTEN']}/metrics"
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        if "memory_inbox_pending_messages" in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert re.search(r"^memory_inbox_ack_pending_messages \d", text, re.MULTILINE), text[-2000:]
