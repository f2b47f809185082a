"""Replica groups (issue 15, items 3 and 5): agents with the same ``replica_key`` hold one handle together.

Messages to the handle are spread over the live members, each reaching exactly one; a claimant without the
key, or with another, is refused as for a handle held by one agent; a member SIGKILLed mid-message has what
it had not acknowledged redelivered to another member, and the handle stays live; replies from any member
are replies from the handle; discovery shows the handle once, with its live members.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mesh import AsyncAgent, HandleTaken, Message
from mesh.constants import REGISTRY_BUCKET, STREAM_NAME
from mesh.handles import durable_name
from mesh.registry import Record
from mesh.replicas import group_hash
from tests.mesh.helpers import Factory, eventually

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI") == "true"
BURST = 40 if CI else 200
KEY = "k" * 8 + "-replica-group-secret"
OTHER_KEY = "another-group-secret-0123"


def collect(agent: AsyncAgent, into: list[str], *, reply: bool = False) -> None:
    """Record each message id the agent receives (and answer it with the member's replica id when ``reply``)."""

    @agent.on_message
    async def handle(msg: Message) -> None:
        into.append(msg.message_id)
        if reply:
            await agent.resolve(msg.session, agent.replica_id)


async def member(mesh_agent: Factory, replica_id: str, *, key: str = KEY, **options: object) -> AsyncAgent:
    return await mesh_agent("svc", register=False, replica_key=key, replica_id=replica_id, **options)


async def test_members_share_a_burst_each_message_reaching_exactly_one(mesh_agent: Factory, nats_url: str) -> None:
    got: dict[str, list[str]] = {"n1": [], "n2": []}
    for rid in got:
        agent = await member(mesh_agent, rid)
        collect(agent, got[rid])
        await agent.register()
    sender = await mesh_agent("sender")
    sent = [(await sender.open_session("svc", f"job {i}")).message_id for i in range(BURST)]
    assert await eventually(received(got, BURST), 30), {k: len(v) for k, v in got.items()}
    await asyncio.sleep(0.3)  # nothing more arrives: no message reached both members
    assert sorted(got["n1"] + got["n2"]) == sorted(sent)
    assert got["n1"] and got["n2"], "the server spreads the burst over both members"
    # One durable consumer per lane for the handle, shared by the members (not one per member).
    js = sender._js
    assert js is not None
    info = await js.consumer_info(STREAM_NAME, durable_name("svc"))
    assert info.config.deliver_group == "svc" and info.num_ack_pending == 0 and info.num_pending == 0


def received(got: dict[str, list[str]], n: int) -> Callable[[], Awaitable[bool]]:
    """A check for ``eventually``: the members received ``n`` messages between them."""

    async def check() -> bool:
        return sum(len(v) for v in got.values()) >= n

    return check


async def test_only_members_are_let_in(mesh_agent: Factory, nats_url: str) -> None:
    first = await member(mesh_agent, "n1")
    await first.register()
    second = await member(mesh_agent, "n2")
    await second.register()  # the same key: a member

    outsider = await mesh_agent("svc", register=False)
    with pytest.raises(HandleTaken, match=r"replica group.*give this agent the group's replica_key") as plain:
        await outsider.register()
    assert plain.value.handle == "svc"
    stranger = await member(mesh_agent, "n3", key=OTHER_KEY)
    with pytest.raises(HandleTaken, match="another replica_key"):
        await stranger.register()
    twin = await member(mesh_agent, "n1")  # the right key, but n1 is live with another owner
    with pytest.raises(HandleTaken, match="replica_id 'n1'"):
        await twin.register()

    # The registry holds the key's hash, never the key.
    js = first._js
    assert js is not None
    kv = await js.key_value(REGISTRY_BUCKET)
    entry = await kv.get("svc")
    assert entry.value is not None and KEY.encode() not in entry.value
    record = Record.decode(entry.value)
    assert record.group == group_hash("svc", KEY) and record.owner == record.group
    assert record.replica_ids() == ("n1", "n2")

    # A handle held by one agent stays its own: replicas are refused too (the one-owner rule is unchanged).
    await mesh_agent("solo")
    group_claimant = await mesh_agent("solo", register=False, replica_key=KEY, replica_id="n1")
    with pytest.raises(HandleTaken, match="held by a single agent"):
        await group_claimant.register()

    # Bad arguments are refused before anything is sent.
    with pytest.raises(ValueError, match="at least 16"):
        AsyncAgent("svc", servers=nats_url, replica_key="short")
    with pytest.raises(ValueError, match="replica_id"):
        AsyncAgent("svc", servers=nats_url, replica_key=KEY, replica_id="a.b")
    with pytest.raises(ValueError, match="give replica_key too"):
        AsyncAgent("svc", servers=nats_url, replica_id="n1")
    with pytest.raises(ValueError, match="ephemeral"):
        await (await member(mesh_agent, "n9")).register(ephemeral=True)


VICTIM = """
import asyncio, sys
from mesh import AsyncAgent

async def main(url, key):
    agent = AsyncAgent("svc", servers=url, ack_wait=1.0, heartbeat_interval=0.2, replica_key=key,
                       replica_id="victim")

    @agent.on_message
    async def handle(msg):
        print("RECEIVED", msg.message_id, flush=True)
        await asyncio.sleep(3600)  # killed in here, before the ack

    async with agent:
        await agent.register()
        print("READY", flush=True)
        await agent.run_forever()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_killed_member_s_messages_go_to_another_and_the_handle_stays_live(
        mesh_agent: Factory, nats_url: str, tmp_path: Path) -> None:
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), nats_url, KEY,
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    victim_got: list[str] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().startswith("READY"), line
        survivor_got: list[str] = []
        survivor = await member(mesh_agent, "n2", ack_wait=1.0, heartbeat_interval=0.2)
        collect(survivor, survivor_got)
        await survivor.register()
        sender = await mesh_agent("sender")
        n = 20
        sent = [(await sender.open_session("svc", f"job {i}")).message_id for i in range(n)]

        async def victim_has_some() -> bool:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
            if line.startswith("RECEIVED"):
                victim_got.append(line.split()[1])
            return len(victim_got) >= 1

        assert await eventually(victim_has_some, 20)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def all_at_survivor() -> bool:
        return set(survivor_got) >= set(sent)

    assert await eventually(all_at_survivor, 30), (len(survivor_got), len(victim_got))
    assert set(victim_got) <= set(survivor_got)  # what the victim held was redelivered, not lost

    async def victim_dropped() -> bool:
        found = await sender.introspect("svc")
        return found.online and found.replicas == ("n2",)

    assert await eventually(victim_dropped, 10)  # its heartbeat expired; the group carries on
    more = await sender.open_session("svc", "after the kill")

    async def more_arrived() -> bool:
        return more.message_id in survivor_got

    assert await eventually(more_arrived, 10)


async def test_requests_are_answered_by_any_member_as_the_handle(mesh_agent: Factory) -> None:
    answered_by: list[str] = []
    for rid in ("n1", "n2"):
        agent = await member(mesh_agent, rid)
        collect(agent, [], reply=True)
        await agent.register()
    asker = await mesh_agent("asker")
    n = 12 if CI else 40
    for i in range(n):
        reply = await asker.request("svc", f"question {i}", timeout=10)
        assert reply.from_handle == "svc" and reply.message_type == "session_resolve"
        answered_by.append(reply.payload)
    assert set(answered_by) == {"n1", "n2"}, answered_by  # both members answered, each as "svc"
    sessions = await asker.list_sessions()
    assert all(s.to_handle == "svc" and s.state == "resolved" for s in sessions) and len(sessions) == n


async def test_discovery_shows_the_handle_once_with_its_live_members(mesh_agent: Factory) -> None:
    from mesh import Manifest

    manifest = Manifest(description="a replicated service", tags=("replicated",), capabilities=("answer",))
    first = await member(mesh_agent, "n1")
    await first.register(manifest=manifest)
    second = await member(mesh_agent, "n2")
    await second.register(manifest=manifest)
    looker = await mesh_agent("looker")

    listed = [e for e in await looker.list_handles() if e.handle == "svc"]
    assert len(listed) == 1 and listed[0].online and listed[0].replicas == ("n1", "n2")
    found = await looker.find_handles(capabilities=["answer"])
    assert [(m.handle, m.replicas) for m in found] == [("svc", ("n1", "n2"))]
    assert (await looker.introspect("svc")).replicas == ("n1", "n2")
    assert [e.replicas for e in await looker.list_handles() if e.handle == "looker"] == [()]

    await first.close()  # one member leaves: the handle stays, with one member
    info = await looker.introspect("svc")
    assert info.online and info.replicas == ("n2",)
    await second.close()  # the last member leaves: offline, its inbox kept
    info = await looker.introspect("svc")
    assert info.found and not info.online and info.replicas == ()
    # An offline group's handle is free, like any offline handle: anyone may claim it (and the group's consumers
    # are replaced, so nothing reaches a former member).
    await mesh_agent("svc")
    assert (await looker.introspect("svc")).replicas == ()


async def test_a_frozen_member_is_dropped_then_rejoins_and_a_group_taken_over_loses_its_claim(
        mesh_agent: Factory) -> None:
    frozen = await member(mesh_agent, "n1", heartbeat_interval=0.2)
    await frozen.register()
    other = await member(mesh_agent, "n2", heartbeat_interval=0.2)
    await other.register()
    looker = await mesh_agent("looker")
    presence = frozen._presence
    assert presence is not None
    await presence.stop_heartbeat()  # as if SIGSTOPped: no heartbeat, nothing else either

    async def replicas_are(ids: tuple[str, ...]) -> bool:
        return (await looker.introspect("svc")).replicas == ids

    assert await eventually(lambda: replicas_are(("n2",)), 10)  # dropped by n2's heartbeat; the handle lives on
    assert await presence.confirm()  # it resumes: its next act confirms the claim, and it joins again
    assert frozen.claim_lost is None and await replicas_are(("n1", "n2"))

    # Once every member is gone, the handle is free: another agent takes it, and a member that resumes
    # then has lost its claim (it stops, as a single owner would).
    await other.close()
    assert await eventually(lambda: _offline(looker), 10)
    await mesh_agent("svc")
    assert not await presence.confirm()

    async def stopped() -> bool:
        return frozen.claim_lost is not None and not frozen.is_registered

    assert await eventually(stopped, 5)


async def _offline(looker: AsyncAgent) -> bool:
    return not (await looker.introspect("svc")).online
