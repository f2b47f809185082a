"""examples/mesh_hello.py and examples/incident_room.py run as subprocesses, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mesh_hello.py"


@pytest.mark.parametrize("own_server", [False, True], ids=["given-url", "own-server"])
def test_mesh_hello_runs(own_server: bool, nats_url: str) -> None:
    args = [sys.executable, str(EXAMPLE)] + ([] if own_server else ["--nats-url", nats_url])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "deploy <- session_resolve seq=4" in out
    assert "request() -> session_resolve: 1 rollback: payments, 2 days ago" in out
    assert "('hello-memory', 10, True)" in out
    assert ("started nats-server" in out) is own_server


def test_incident_room_runs(nats_url: str) -> None:
    """(Its own-server path is mesh_hello's, tested above.)"""
    example = REPO / "examples" / "incident_room.py"
    args = [sys.executable, str(example), "--nats-url", nats_url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "opened with 5 specialists" in out
    assert "# INC-7: Checkout errors (sev2)" in out and "12 room events, trace INC-7" in out
    findings = [line for line in out.splitlines() if line.startswith("- #")]
    assert sorted(line.split("@")[1].split(" ")[0] for line in findings) == [
        "billing-agent", "logs-agent", "metrics-agent", "release-agent", "status-agent"]
    assert "payments v2.31 rolled out at 09:10" in out
    assert ": closed, 6 members, next seq 14" in out
    assert "## Decision" in out and "@memory" not in out  # no @memory on this mesh: not invited
