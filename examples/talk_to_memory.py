import asyncio
import json
import os

from mesh import AsyncAgent

NATS_URL = os.environ.get("MEMORY_AGENT_NATS_URL", "nats://127.0.0.1:4222")


async def main() -> None:
    async with AsyncAgent("deploy", servers=NATS_URL) as agent:
        await agent.register()
        # Report: any JSON object without a "query" key. request() waits for @memory's reply, so the
        # report is stored before the question below is asked.
        report = {"event": "rollback", "service": "api-gateway", "reason": "error rate spike"}
        stored = await agent.request("memory", json.dumps(report), trace_id="t-81", timeout=30)
        print(stored.payload)  # {"status": "stored", "id": ..., "duplicate": false}
        # Ask: plain text gets a readable answer naming the events it rests on.
        answer = await agent.request("memory", "Give me the timeline of trace t-81", timeout=30)
        print(answer.payload)


asyncio.run(main())
