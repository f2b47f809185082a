"""@postmortem asks @memory for an incident's timeline and why it happened.

    python examples/postmortem.py --nats-url nats://127.0.0.1:4222 [--trace-id t-81]
"""

from __future__ import annotations

import argparse
import json
import os

from mesh import Manifest, SyncAgent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nats-url", default=os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222"))
parser.add_argument("--trace-id", default="t-81")
args = parser.parse_args()

manifest = Manifest(description="writes incident postmortems", tags=("ops",))
with SyncAgent("postmortem", servers=args.nats_url, manifest=manifest) as agent:
    agent.register()
    # A plain-text question gets a readable answer that names its events.
    timeline = agent.request("memory", f"Give me the timeline of trace {args.trace_id}", content_type="text/plain", timeout=60)
    print(timeline.payload, end="\n\n")
    why = agent.request("memory", "Why did production roll back today?", content_type="text/plain", timeout=60)
    print(why.payload, end="\n\n")
    # A structured question gets JSON: the answer plus the events it rests on.
    reply = agent.request("memory", json.dumps({"query": "What rollbacks happened in the last 7 days?", "limit": 20}),
                          content_type="application/json", timeout=60)
    answer = json.loads(reply.payload)
    # The answer's first line says how the question was read: what, and the window in words with its zone.
    print(answer["answer"].splitlines()[0])
    for event in answer["events"]:
        print(f"  #{event['id']} {event['occurred_at']} @{event['from_handle']} {event['event']} trace={event['trace_id']}")
