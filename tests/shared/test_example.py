"""examples/shared_ticket.py runs as a subprocess against a real daemon, so it cannot rot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


async def test_three_agents_coordinate_a_ticket_through_shared_memory(memory: Any, nats_url: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(ROOT / "examples" / "shared_ticket.py"), "--nats-url", nats_url],
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "@support  wrote ticket:1042 to workflow ticket-1042" in out
    assert ("@resolver read ticket:1042 (version 2, by @support): 'VPN drops every hour, again!'; "
            "runbook: renew the DHCP lease on the VPN gateway") in out
    assert "@escalation saw ticket:1042:sentiment = 'angry' in workflow ticket-1042" in out
    assert "customer  <- ticket 1042: resolved" in out
    assert ("workflow ticket-1042 holds: ['ticket:1042', 'ticket:1042:priority', 'ticket:1042:sentiment']"
            in out)
    history = [line.split(" ", 3)[-1] for line in out.splitlines() if line.startswith("  v")]
    assert history == ["set by @support: status new", "set by @resolver: status resolved"]
    assert "outcomes of resolve-vpn: 1 recorded, success rate 100%" in out
