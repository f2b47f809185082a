"""``memory-agent kv get|set|delete|list|watch`` and ``memory-agent outcomes`` against the real daemon: the
first command as a subprocess (the installed entry point), the rest through typer's runner in a thread (the
same app, without paying an interpreter start per command)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memory_agent.cli import app
from tests.shared.conftest import ClientFactory

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


ENV = {"HF_HUB_OFFLINE": "1", "MEMORY_AGENT_NATS__CLIENT_HANDLE": "ops"}


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def cli(*args: str, subprocess_run: bool = False) -> Done:
    """Run the CLI (as handle ``ops``) off the event loop, so the daemon under test keeps serving."""
    if subprocess_run:
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "memory_agent", *args],
                                       env={**os.environ, **ENV}, cwd=ROOT, capture_output=True, text=True,
                                       timeout=60, check=False)
        return Done(done.returncode, done.stdout, done.stderr)
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=ENV)
    return Done(result.exit_code, result.stdout, result.stderr)


async def test_kv_commands_and_outcomes(memory: Any, nats_url: str, client: ClientFactory) -> None:
    url = ["--nats-url", nats_url]
    where = ["--scope", "workflow", "--id", "t-cli"]
    before = str(time.time() - 1)
    done = await cli("kv", "set", "ticket:1", '{"status": "open"}', *where, *url, subprocess_run=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"key": "ticket:1", "scope": "workflow", "scope_id": "t-cli", "version": 1}
    done = await cli("kv", "set", "ticket:1", "closed", "--text", *where, "--if-version", "1", *url)
    assert done.returncode == 0, done.stderr
    done = await cli("kv", "set", "ticket:1", '"x"', *where, "--if-version", "1", *url)
    assert done.returncode == 1 and "version_conflict" in done.stderr and "at version 2" in done.stderr

    done = await cli("kv", "watch", "ticket:*", *where, "--since", before, "--count", "2", *url)  # a late replay
    changes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(c["action"], c["data"], c["previous_data"], c["by"]) for c in changes] == [
        ("set", {"status": "open"}, None, "ops"), ("set", "closed", {"status": "open"}, "ops")], done.stderr
    assert changes[1]["seq"] > changes[0]["seq"]

    done = await cli("kv", "get", "ticket:1", "--workflow", "t-cli", *url)  # hierarchical, from that workflow
    assert (done.returncode, json.loads(done.stdout)) == (0, "closed")
    done = await cli("kv", "list", *where, *url)
    assert done.stdout.splitlines() == ["ticket:1"]
    done = await cli("kv", "delete", "ticket:1", *where, *url)
    assert done.returncode == 0 and json.loads(done.stdout) == {"key": "ticket:1", "deleted": True}

    reporter = await client("planner")
    await reporter.record_outcome("plan", True, confidence=0.8)
    await reporter.record_outcome("plan", False, confidence=0.4)
    done = await cli("outcomes", *url)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:5] == ["node", "count", "success", "confidence", "verifier"]
    assert row.split()[:5] == ["plan", "2", "50%", "0.60", "-"]
