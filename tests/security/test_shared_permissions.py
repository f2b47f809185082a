"""Shared memory on examples/nats-server.conf (fresh keys, ``authenticated_senders``): agents read the state
directly and follow changes, write only through @memory, and an actor scope is written only by its handle
(the handle the server authenticated, so no agent can pass for another)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import nats.errors
import pytest

from memory_agent.client import MemoryClient
from memory_agent.errors import SharedAccessDenied
from memory_agent.shared.wire import ChangeEvent
from mesh import AsyncAgent, NatsAuth
from mesh.server import NatsServer
from tests.conftest import DaemonFactory
from tests.security.test_permissions import Intruder, locked_down  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(90)


async def test_actor_scopes_are_written_only_by_their_own_handle_on_the_example_server(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]], make_daemon: DaemonFactory,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.agent")
    server, auths = locked_down
    url = server.url
    await make_daemon(url, clock=time.time, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                      security={"authenticated_senders": True, "admins": ["ops"]})
    deploy_agent = AsyncAgent("deploy", servers=url, auth=auths["deploy"])
    monitor_agent = AsyncAgent("monitor", servers=url, auth=auths["monitor"])
    spy = Intruder()
    try:
        async with deploy_agent, monitor_agent:
            await deploy_agent.register()
            await monitor_agent.register()
            deploy = await MemoryClient(agent=deploy_agent, timeout=15).start()
            monitor = await MemoryClient(agent=monitor_agent, timeout=15).start()
            seen: list[ChangeEvent] = []

            @deploy.on_change("preferences")  # a change subscription is allowed by the example
            async def changed(event: ChangeEvent) -> None:
                seen.append(event)

            await asyncio.sleep(0.5)
            await monitor.actor().set("preferences", {"threshold": 0.9})
            await deploy.actor().set("preferences", {"tone": "terse"})
            with pytest.raises(SharedAccessDenied) as denied:
                await deploy.actor("monitor").set("preferences", {"threshold": 0.0})
            assert (denied.value.handle, denied.value.scope_id) == ("deploy", "monitor")
            with pytest.raises(SharedAccessDenied):
                await deploy.actor("monitor").delete("preferences")
            await deploy.global_scope.set("maintenance", False)  # no global_writers configured: anyone
            await deploy.actor().set("session_token", "t", ttl_s=1)
            assert await deploy.actor().list_keys() == ["preferences", "session_token"]  # @memory's reads too
            assert [c.data for c in await deploy.actor().history("preferences")] == [{"tone": "terse"}]

            # Reads come straight from JetStream, as the example allows; nothing changed monitor's value.
            assert deploy._direct is True
            assert await deploy.actor("monitor").get("preferences") == {"threshold": 0.9}
            assert await monitor.get("maintenance") is False
            deadline = time.monotonic() + 10
            while len(seen) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 10
            while await deploy.actor().exists("session_token") and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert [c.action for c in await deploy.actor().history("session_token")] == ["expire", "set"]
            assert [(e.scope_id, e.by, e.data) for e in seen] == [
                ("monitor", "monitor", {"threshold": 0.9}), ("deploy", "deploy", {"tone": "terse"})]

            # Around @memory, deploy's credentials can write no shared memory at all.
            nc = await spy.connect(url, auths["deploy"], "deploy")
            js = nc.jetstream(timeout=1.0)
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish("$KV.memory_state.actor.monitor.preferences", b'{"threshold": 0}', timeout=1.0)
            assert await spy.denied('Publish to "$KV.memory_state.actor.monitor.preferences"')
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish("memory.change.actor.monitor.preferences", json.dumps(
                    {"key": "preferences", "scope": "actor", "scope_id": "monitor", "action": "set", "data": 0,
                     "previous_data": None, "version": 99, "at": 0, "by": "monitor"}).encode(), timeout=1.0)
            assert await spy.denied('Publish to "memory.change.actor.monitor.preferences"')
            assert await monitor.actor().get("preferences") == {"threshold": 0.9}
            assert "denied" not in caplog.text.replace("the NATS server denied 'deploy'", "")  # only the spy's
            await deploy.close()
            await monitor.close()
    finally:
        if spy.nc is not None:
            await spy.nc.close()


async def test_the_ops_cli_handle_as_admin_fixes_another_actor_scope(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]], make_daemon: DaemonFactory,  # noqa: F811
) -> None:
    server, auths = locked_down
    await make_daemon(server.url, clock=time.time, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                      security={"authenticated_senders": True, "admins": ["ops"]}, shared={"global_writers": ["ops"]})
    async with MemoryClient(server.url, auth=auths["deploy"], client_handle="deploy", timeout=15) as deploy:
        await deploy.actor().set("quota", 1)
        with pytest.raises(SharedAccessDenied, match="only ops may"):
            await deploy.global_scope.set("freeze", True)
    async with MemoryClient(server.url, auth=auths["ops"], client_handle="ops", timeout=15) as ops:
        await ops.actor("deploy").set("quota", 5)
        await ops.global_scope.set("freeze", True)
        entry: Any = await ops.actor("deploy").get_entry("quota")
        assert (entry.value, entry.updated_by) == (5, "ops")
