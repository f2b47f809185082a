"""@test-runner reports the flaky tests it found and quarantined in one CI run.

    python examples/flaky_tests.py --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

from mesh import Manifest, SyncAgent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nats-url", default=os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222"))
args = parser.parse_args()

run_trace = f"ci-{uuid.uuid4().hex[:6]}"  # one trace for the CI run: its reports share it
reports = [
    {"event": "flaky_test", "test": "test_login_redirect", "suite": "web", "failures": "3 of 10 runs",
     "reason": "race between session cookie and redirect"},
    {"event": "flaky_test", "test": "test_invoice_totals", "suite": "billing", "failures": "2 of 10 runs",
     "reason": "depends on wall-clock rounding"},
    {"event": "test_quarantined", "test": "test_login_redirect", "suite": "web",
     "reason": "flaky 3/10, quarantined until fixed"},
]

manifest = Manifest(description="runs the test suites", tags=("ci",))
with SyncAgent("test-runner", servers=args.nats_url, manifest=manifest) as agent:
    agent.register()
    for report in reports:
        report["occurred_at"] = time.time() - 3600
        reply = agent.request("memory", json.dumps(report), content_type="application/json",
                              trace_id=run_trace, timeout=60)
        print(f"{report['event']} {report['test']}: {reply.payload}")
