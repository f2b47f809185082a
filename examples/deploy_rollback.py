"""@deploy reports a rollback to @memory.

    python examples/deploy_rollback.py --nats-url nats://127.0.0.1:4222 [--trace-id t-81]

A report is one session opened to ``memory`` with a JSON payload. ``request()`` opens it and waits for
@memory's reply (``{"status": "stored", "id": ..., "duplicate": false}``); an agent that does not care
about the reply can call ``agent.open_session("memory", payload)`` and move on: the report is durable.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mesh import Manifest, SyncAgent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nats-url", default=os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222"))
parser.add_argument("--trace-id", default="t-81")
args = parser.parse_args()

report = {
    "event": "rollback",
    "service": "api-gateway",
    "from_version": "v2.4.1",
    "to_version": "v2.3.9",
    "reason": "error rate spike after deploy",
    "environment": "production",
    "occurred_at": time.time() - 20 * 60,  # unix seconds, or ISO-8601
}

with SyncAgent("deploy", servers=args.nats_url, manifest=Manifest(description="deploys services", tags=("ops",))) as agent:
    agent.register()
    reply = agent.request("memory", json.dumps(report), content_type="application/json",
                          trace_id=args.trace_id, timeout=60)
    print(f"@memory: {reply.payload}")
