"""@monitor reports an anomaly, and @triage the root cause it traced it to (same trace id).

    python examples/monitor_anomaly.py --nats-url nats://127.0.0.1:4222 [--trace-id t-81]
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

anomaly = {
    "event": "anomaly",
    "service": "api-gateway",
    "metric": "http_5xx_rate",
    "value": 0.12,
    "baseline": 0.004,
    "summary": "5xx error rate on api-gateway jumped from 0.4% to 12% two minutes after the v2.4.1 deploy",
    "occurred_at": time.time() - 25 * 60,
}
root_cause = {
    "event": "root_cause",
    "service": "api-gateway",
    "cause": "v2.4.1 lowered the upstream connection pool from 50 to 5; requests queued and timed out",
    "fix": "rolled back to v2.3.9; pool size restored in PR 4127",
    "occurred_at": time.time() - 10 * 60,
}

for handle, description, report in (("monitor", "watches metrics", anomaly), ("triage", "finds root causes", root_cause)):
    with SyncAgent(handle, servers=args.nats_url, manifest=Manifest(description=description, tags=("ops",))) as agent:
        agent.register()
        reply = agent.request("memory", json.dumps(report), content_type="application/json",
                              trace_id=args.trace_id, timeout=60)
        print(f"@{handle} {report['event']}: {reply.payload}")
