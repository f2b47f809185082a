"""examples/mesh_hello.py runs as a subprocess, so it cannot rot."""

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
