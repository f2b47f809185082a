"""Two agents on the mesh: open -> reply -> resolve, then request().

    python examples/mesh_hello.py                       # starts its own nats-server (temporary store)
    python examples/mesh_hello.py --nats-url nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from mesh import AsyncAgent, Manifest, Message, NatsServer


async def demo(url: str) -> None:
    memory = AsyncAgent("hello-memory", servers=url,
                        manifest=Manifest(description="remembers things", tags=("memory",)))
    deploy = AsyncAgent("hello-deploy", servers=url, manifest=Manifest(description="deploys", tags=("ops",)))
    resolved = asyncio.Event()

    @memory.on_message
    async def on_memory(msg: Message) -> None:
        print(f"memory <- {msg.message_type:<15} seq={msg.sequence} trace={msg.trace_id[:8]} {msg.payload}")
        if msg.message_type == "session_open" and msg.content_type == "application/json":
            await memory.send(msg.session, "noted, anything else?")
        elif msg.message_type == "message":
            await memory.resolve(msg.session, "stored 1 report")
        elif msg.message_type == "session_open":
            await memory.resolve(msg.session, "1 rollback: payments, 2 days ago")

    @deploy.on_message
    async def on_deploy(msg: Message) -> None:
        print(f"deploy <- {msg.message_type:<15} seq={msg.sequence} trace={msg.trace_id[:8]} {msg.payload}")
        if msg.message_type == "message":
            await deploy.send(msg.session, "that's all")
        elif msg.message_type == "session_resolve":
            resolved.set()

    async with memory, deploy:
        await memory.register()
        await deploy.register()

        report = {"service": "payments", "event": "rollback"}
        opened = await deploy.open_session("hello-memory", json.dumps(report), content_type="application/json")
        print(f"deploy opened session {opened.session[:8]} trace={opened.trace_id[:8]}")
        await asyncio.wait_for(resolved.wait(), 10)

        reply = await deploy.request("hello-memory", "What rollbacks happened in the last 7 days?", timeout=10)
        print(f"request() -> {reply.message_type}: {reply.payload}")
        found = await deploy.find_handles(tags=["memory"])
        print("find_handles(tags=['memory']) ->", [(m.handle, m.score, m.online) for m in found])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="use this NATS server (JetStream enabled) instead of starting one")
    args = parser.parse_args()
    if args.nats_url:
        asyncio.run(demo(args.nats_url))
        return
    with tempfile.TemporaryDirectory() as store, NatsServer(store_dir=Path(store)) as server:
        print(f"started nats-server at {server.url}")
        asyncio.run(demo(server.url))


if __name__ == "__main__":
    main()
