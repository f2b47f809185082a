"""Three agents share a support ticket's working state through @memory's shared memory.

    memory-agent run                                   # in another terminal
    python examples/shared_ticket.py [--nats-url nats://127.0.0.1:4222]

* @support takes the customer's ticket, writes it to workflow memory (no scope, no id: the workflow is the
  trace id of the message it is handling) and asks @resolver to fix it on the same trace;
* @resolver reads the ticket from that same workflow memory, finds the runbook in the global scope (the
  hierarchical get falls through workflow, session and actor to global), marks the ticket resolved with
  compare-and-set, and records the outcome in the procedural ledger;
* @escalation never talks to them: it reacts to changes, ``on_change("ticket:*:sentiment")``, and raises
  the priority of angry tickets in their workflow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from memory_agent.client import MemoryClient
from memory_agent.shared import ChangeEvent
from mesh import AsyncAgent, Message

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--nats-url", default=os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222"))
parser.add_argument("--ticket", default="1042")
args = parser.parse_args()


async def main() -> None:
    support, resolver, escalation, customer = (AsyncAgent(h, servers=args.nats_url)
                                               for h in ("support", "resolver", "escalation", "customer"))
    memory = {a.handle: MemoryClient(agent=a, timeout=30) for a in (support, resolver, escalation)}
    escalated = asyncio.Event()

    @support.on_message
    async def take_ticket(msg: Message) -> None:
        if msg.message_type != "session_open":
            return
        ticket = args.ticket
        mine = memory["support"]
        await mine.set(f"ticket:{ticket}", {"id": ticket, "text": msg.payload, "status": "new"})
        await mine.set(f"ticket:{ticket}:sentiment", "angry" if msg.payload.endswith("!") else "calm")
        print(f"@support  wrote ticket:{ticket} to workflow {msg.trace_id}")
        answer = await support.request("resolver", json.dumps({"ticket": ticket}), trace_id=msg.trace_id, timeout=30)
        await support.resolve(msg.session, f"ticket {ticket}: {answer.payload}")

    @resolver.on_message
    async def resolve_ticket(msg: Message) -> None:
        if msg.message_type != "session_open":
            return
        ticket = json.loads(msg.payload)["ticket"]
        mine = memory["resolver"]
        entry = await mine.get_entry(f"ticket:{ticket}")  # the workflow @support wrote, found by trace id
        assert entry is not None
        runbook = await mine.get("runbook:vpn")  # not in the workflow, session or actor scope: global
        print(f"@resolver read ticket:{ticket} (version {entry.version}, by @{entry.updated_by}): "
              f"{entry.value['text']!r}; runbook: {runbook}")
        await mine.set(f"ticket:{ticket}", {**entry.value, "status": "resolved", "fix": runbook},
                       if_version=entry.version)  # compare-and-set: fails if someone changed it meanwhile
        await mine.record_outcome("resolve-vpn", True, confidence=0.8)
        await resolver.resolve(msg.session, "resolved")

    @memory["escalation"].on_change("ticket:*:sentiment")
    async def on_sentiment(change: ChangeEvent) -> None:
        print(f"@escalation saw {change.key} = {change.data!r} in workflow {change.scope_id}")
        if change.data == "angry":
            ticket = change.key.split(":")[1]
            await memory["escalation"].workflow(change.scope_id).set(f"ticket:{ticket}:priority", "high")
            print(f"@escalation set ticket:{ticket}:priority = 'high'")
            escalated.set()

    for agent in (support, resolver, escalation, customer):
        await agent.start()
        await agent.register()
    for client in memory.values():
        await client.start()
    try:
        await memory["support"].global_scope.set("runbook:vpn", "renew the DHCP lease on the VPN gateway")
        await asyncio.sleep(0.5)  # @escalation's change subscription is up
        trace = f"ticket-{args.ticket}"
        reply = await customer.request("support", "VPN drops every hour, again!", trace_id=trace, timeout=60)
        print(f"customer  <- {reply.payload}")
        await asyncio.wait_for(escalated.wait(), 10)

        workflow = memory["support"].workflow(trace)
        print(f"workflow {trace} holds: {await workflow.list_keys()}")
        for change in reversed(await workflow.history(f"ticket:{args.ticket}")):
            print(f"  v{change.version} {change.action} by @{change.by}: status {change.data['status']}")
        for node in await memory["support"].outcomes("resolve-vpn"):
            print(f"outcomes of {node['node_id']}: {node['count']} recorded, success rate {node['success_rate']:.0%}")
    finally:
        for client in memory.values():
            await client.close()
        for agent in (support, resolver, escalation, customer):
            await agent.close()


asyncio.run(main())
