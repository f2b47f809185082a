"""One agent cannot stop the mesh (issue 14, item 4), under examples/nats-server.conf on a real server.

With only deploy's credentials, an adversarial trial filled the whole inbox stream with about 1 MB raw
JetStream publishes to a made-up recipient, after which every report to @memory was refused, and wrote
50 junk 1 MB session records. Here deploy floods as hard as the example permissions let it, with ~1 MB
raw publishes, and monitor's report to @memory still gets through and is stored.
"""

from __future__ import annotations

import asyncio
import json
import os

import nats.errors
import nats.js.errors
import pytest

from mesh import AsyncAgent, Message, NatsAuth, NatsServer, Quotas
from tests.conftest import DaemonFactory
from tests.security.test_permissions import Intruder, locked_down  # noqa: F401 - locked_down is a fixture

#: The streams' quotas for this test (the trusted creator's): 16 messages per sender and lane, so the
#: flood is ~16 MB rather than the default 512 MB; the mechanism is the same.
QUOTAS = Quotas(per_sender_messages=16)
MEGABYTE = 1_000_000


async def test_a_flood_by_one_agent_does_not_stop_another_agents_report(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]],  # noqa: F811
    make_daemon: DaemonFactory,
) -> None:
    server, auths = locked_down
    # @memory, the trusted creator, makes the streams and buckets; then it is down for a while.
    creator = AsyncAgent("memory", servers=server.url, auth=auths["memory"], quotas=QUOTAS)
    async with creator:
        await creator.register()
    spy = Intruder()
    try:
        nc = await spy.connect(server.url, auths["deploy"], "deploy")
        js = nc.jetstream(timeout=2.0)
        # (1) ~1 MB raw publishes into @memory's inbox, as deploy (allowed), until the quota refuses them.
        stored, refused = 0, ""
        for _ in range(QUOTAS.per_sender_messages + 10):
            try:
                await js.publish("mesh.inbox.memory.deploy", os.urandom(MEGABYTE))
                stored += 1
            except nats.js.errors.APIError as exc:
                refused = exc.description or ""
        assert stored == QUOTAS.per_sender_messages and refused == "maximum messages per subject exceeded"
        # ... and in its priority lane, whose messages are small: refused outright.
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
            await js.publish("mesh.prio.memory.deploy", os.urandom(MEGABYTE))
        # (2) a made-up recipient, which nobody would ever read (the trial's attack): denied.
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("mesh.inbox.nobody.deploy", os.urandom(MEGABYTE), timeout=1.0)
        assert await spy.denied('Publish to "mesh.inbox.nobody.deploy"')
        # (3) junk session records: its own are size-limited, others' are not writable.
        with pytest.raises(nats.js.errors.APIError, match="message size exceeds maximum"):
            await js.publish("$KV.mesh_sessions.deploy.junk", os.urandom(MEGABYTE))
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("$KV.mesh_sessions.memory.junk", b"{}", timeout=1.0)
        assert await spy.denied('Publish to "$KV.mesh_sessions.memory.junk"')

        # monitor's report still gets in while @memory is down ...
        monitor = AsyncAgent("monitor", servers=server.url, auth=auths["monitor"])
        replies: asyncio.Queue[Message] = asyncio.Queue()

        @monitor.on_message
        async def on_reply(msg: Message) -> None:
            await replies.put(msg)

        async with monitor:
            await monitor.register()
            report = json.dumps({"event": "anomaly", "service": "checkout", "summary": "p99 doubled"})
            opened = await monitor.open_session("memory", report, content_type="application/json")
            # ... and is stored once @memory is back (it throws deploy's garbage away).
            daemon = await make_daemon(server.url, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                                       security={"authenticated_senders": True})
            reply = await asyncio.wait_for(replies.get(), 30)
            assert reply.session == opened.session and json.loads(reply.payload)["status"] == "stored"
            # deploy may flood again, and monitor is still answered at once, while the flood drains.
            for _ in range(QUOTAS.per_sender_messages):
                try:
                    await js.publish("mesh.inbox.memory.deploy", os.urandom(MEGABYTE))
                except nats.js.errors.APIError:
                    break
            answer = await monitor.request("memory", json.dumps({"op": "stats"}), content_type="application/json",
                                           timeout=30)
            assert json.loads(answer.payload)["events"] == 1
        assert [e.from_handle for e in await daemon.store.select(None, _no_filters())] == ["monitor"]
    finally:
        if spy.nc is not None:
            await spy.nc.close()


def _no_filters() -> object:
    from memory_agent.types import Filters

    return Filters()
