"""The memory-agent CLI as a user runs it (subprocesses) against a real daemon on a real nats-server, and
the README's SDK snippet, which is examples/talk_to_memory.py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memory_agent.cli import app
from mesh.server import NatsServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "talk_to_memory.py"
pytestmark = pytest.mark.timeout(120)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **extra}


def cli_here(*args: str) -> Any:
    """The CLI in this process (for commands that need no daemon on this test's loop): faster than a
    subprocess. Returns click's Result (``exit_code``, ``stdout``, ``stderr``)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


async def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m memory_agent ARGS`` in a thread, so a daemon on this test's loop keeps serving."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "memory_agent", *args], env=env or _env(), cwd=ROOT,
        capture_output=True, text=True, timeout=timeout)


def test_the_readme_snippet_is_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Talking to @memory from an agent"):]
    block = section[section.index("```python\n") + len("```python\n"):]
    assert block[: block.index("```\n")] == EXAMPLE.read_text()


async def test_the_example_stores_then_finds_its_report_and_runs_again_cleanly(start_daemon, nats_url) -> None:  # type: ignore[no-untyped-def]
    await start_daemon()
    for run in range(2):
        done = await asyncio.to_thread(subprocess.run, [sys.executable, str(EXAMPLE)], env=_env(MEMORY_AGENT_NATS_URL=nats_url),
                                       cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        stored, *answer = done.stdout.splitlines()
        assert json.loads(stored)["status"] == "stored"
        # The question never overtakes the report: every run's own report is in its timeline.
        assert answer[0].startswith(f"Timeline of trace t-81: {run + 1} event")
        assert answer[-1].count("@deploy reported rollback") == 1
        assert "handler failed" not in done.stderr and "Traceback" not in done.stderr


async def test_version_help_and_refusals_before_connecting(tmp_path: Path) -> None:
    from memory_agent import __version__

    result = cli_here("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"memory-agent {__version__}"
    result = cli_here("forget", "--help")
    assert "Delete the event answers cite as [#ID]" in " ".join(result.stdout.split())
    result = cli_here("ask", "  ")
    assert result.exit_code == 2 and "the question is empty" in result.stderr
    done = await cli("run", "--nats-url", "foo", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "'foo' is not a NATS URL" in done.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = await cli("run", "--data-dir", str(blocker / "data"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "cannot be used (Not a directory)" in done.stderr and "--data-dir" in done.stderr
    done = await cli("run", "--listen", "9464", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1 and "not HOST:PORT" in done.stderr


async def test_run_with_a_taken_port_says_which_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = await cli("run", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 1, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("memory-agent:")]
    assert f"port {port} of the embedded nats-server is in use" in line and "--port" in line
    assert "Server is ready" not in done.stderr and "Traceback" not in done.stderr


async def test_report_as_ask_stats_events_and_check(start_daemon, nats_server: NatsServer, nats_url) -> None:  # type: ignore[no-untyped-def]
    daemon = await start_daemon()
    env = _env(MEMORY_AGENT_NATS_URL=nats_url)
    done = await cli("report", '{"event": "rollback", "service": "api", "occurred_at": "2026-11-20T14:00:00Z"}',
                     "--trace-id", "t-81", "--as", "ops", env=env)
    assert done.returncode == 0, done.stderr
    event_id = json.loads(done.stdout)["id"]
    [stored] = await daemon.store.get([event_id])
    assert stored.from_handle == "ops"  # not a random cli-<hex>
    await cli("report", '{"event": "flaky_test", "test": "test_login", "occurred_at": "2026-11-21T08:00:00Z"}',
              "--trace-id", "ci-7", env=env)
    done = await cli("ask", "x" * 9000, env=env)
    assert done.returncode == 1 and "at most 8000" in done.stderr  # @memory refused it: not exit 0
    done = await cli("stats", "--json", env=env)
    stats = json.loads(done.stdout)
    assert stats["events"] == 2 and stats["wal_bytes"] > 0
    done = await cli("stats", env=env)
    mb = (stats["db_bytes"] + stats["wal_bytes"]) / 1e6
    assert f"({mb:.1f} MB SQLite" in done.stdout and "write-ahead log" in done.stdout

    data = str(daemon.config.data_dir)
    result = cli_here("events", "--data-dir", data)  # reads SQLite read-only: needs no daemon
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 2 and result.stderr.strip() == "2 events"
    assert re.match(r"#\d+  2026-11-21T08:00:00Z  @cli-[0-9a-f]{8}  flaky_test  trace ci-7  test=test_login", lines[0])
    assert lines[1] == f"#{event_id}  2026-11-20T14:00:00Z  @ops  rollback  trace t-81  service=api"
    result = cli_here("events", "--data-dir", data, "--event", "rollback", "--json")
    [listed] = json.loads(result.stdout)
    assert listed["id"] == event_id and listed["payload"]["service"] == "api" and listed["from_handle"] == "ops"
    result = cli_here("events", "--data-dir", data, "--since", "2026-11-21T00:00:00Z", "--limit", "5")
    assert result.stdout.count("\n") == 1 and "flaky_test" in result.stdout
    result = cli_here("events", "--data-dir", data, "--last", "soon")
    assert result.exit_code == 2 and "not a duration" in result.stderr

    listen = daemon.http_url.removeprefix("http://")
    done = await cli("check", "--listen", listen, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok: @memory ready"), done.stderr
    await asyncio.to_thread(nats_server.stop)
    for _ in range(50):
        done = await cli("check", "--listen", listen, env=env)
        if done.returncode == 1:
            break
    assert done.returncode == 1 and "not ready (serving): nats: not connected" in done.stderr
    await asyncio.to_thread(nats_server.start)


async def test_check_without_a_daemon_fails_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = await cli("check", "--listen", f"127.0.0.1:{port}", "--timeout", "2")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no answer from" in done.stderr


