"""Replies only from the peer, under examples/nats-server.conf on a real server (issue 14, item 3).

An adversarial trial with only deploy's credentials (1) polled the session records with direct gets and
saw every new session, (2) wrote ops->memory sessions as resolved and published a ``session_resolve`` on
its own subject, and ``request()`` returned its text, (3) rewrote a record's ``from`` and got @memory's
reply. Each attack is repeated here and must fail: session records are per participant and private,
``request()`` accepts an answer only from the handle it asked, and a reply goes to the peer of the
replier's own record (set from the authenticated subject), never to a field another agent can write.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import msgpack
import nats.errors
import nats.js.errors
import pytest

from mesh import AsyncAgent, Envelope, Message, NatsAuth, NatsServer, SessionNotFound, encode_envelope
from mesh.handles import inbox_subject
from mesh.sessions import session_for
from tests.conftest import DaemonFactory
from tests.security.test_permissions import Intruder, locked_down  # noqa: F401 - locked_down is a fixture

ROUNDS = 3


def forged_resolve(session: str, to: str, text: str, *, sender: str = "deploy", sequence: int = 2) -> Envelope:
    return Envelope(message_id=str(uuid.uuid4()), session_id=session, from_handle=sender, to_handle=to,
                    payload=text, content_type="text/plain", sent_at=time.time(), type="session_resolve",
                    trace_id="t-forged", sequence=sequence)


def forged_record(peer: str, *, resolved: bool = True) -> bytes:
    """A session record as the SDK writes it, naming ``peer``, resolved unless told otherwise."""
    return bytes(msgpack.packb({
        "v": 2, "peer": peer, "opener": False, "trace_id": "t", "open_id": "x", "open_ref": 1, "sent": 1,
        "seen": 1, "resolved": "self" if resolved else "", "resolve_id": "y" if resolved else "",
        "resolve_seq": 2 if resolved else 0, "resolve_ref": 0, "resolve_for": "", "opened_at": time.time(),
        "resolved_at": time.time() if resolved else None}, use_bin_type=True))


async def test_session_records_cannot_be_polled_read_or_written_by_others(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]],  # noqa: F811
) -> None:
    server, auths = locked_down
    memory = AsyncAgent("memory", servers=server.url, auth=auths["memory"])  # first: it creates the buckets
    ops = AsyncAgent("ops", servers=server.url, auth=auths["ops"])
    spy = Intruder()

    @memory.on_message
    async def answer(msg: Message) -> None:
        await memory.resolve(msg.session, "the real answer")

    try:
        async with memory, ops:
            await memory.register()
            await ops.register()
            message_id = str(uuid.uuid4())
            reply = await ops.request("memory", "how many rollbacks?", message_id=message_id, timeout=15)
            session = session_for("ops", message_id)
            assert reply.session == session

            nc = await spy.connect(server.url, auths["deploy"], "deploy")
            attempts = {
                # the latest record of any key (a wildcard last-by-subject direct get): the polling attack
                "$JS.API.DIRECT.GET.KV_mesh_sessions.$KV.mesh_sessions.>": b"",
                "$JS.API.DIRECT.GET.KV_mesh_sessions.$KV.mesh_sessions.*.*": b"",
                # ops's and memory's own records of the session
                f"$JS.API.DIRECT.GET.KV_mesh_sessions.$KV.mesh_sessions.ops.{session}": b"",
                f"$JS.API.DIRECT.GET.KV_mesh_sessions.$KV.mesh_sessions.memory.{session}": b"",
                # any stored record by its sequence
                "$JS.API.DIRECT.GET.KV_mesh_sessions": json.dumps({"seq": 1}).encode(),
                "$JS.API.STREAM.MSG.GET.KV_mesh_sessions": json.dumps({"seq": 1}).encode(),
                # a consumer reading the whole bucket
                "$JS.API.CONSUMER.CREATE.KV_mesh_sessions": b"{}",
            }
            for subject, body in attempts.items():
                with pytest.raises(nats.errors.TimeoutError):  # no answer: the request never reaches JetStream
                    await nc.request(subject, body, timeout=1.0)
                assert await spy.denied(f'Publish to "{subject}"'), subject
            # ... nor write them (a forged, resolved record naming deploy).
            for key in (f"ops.{session}", f"memory.{session}", f"memory.{uuid.uuid4()}"):
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.jetstream().publish(f"$KV.mesh_sessions.{key}", forged_record("deploy"), timeout=1.0)
                assert await spy.denied(f'Publish to "$KV.mesh_sessions.{key}"'), key
            # deploy's own records are its own to read (and tell it nothing about others' sessions).
            kv = await nc.jetstream().key_value("mesh_sessions")
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get(f"deploy.{session}")
            assert not await spy.denied("DIRECT.GET.KV_mesh_sessions.$KV.mesh_sessions.deploy", timeout=0.5)
    finally:
        if spy.nc is not None:
            await spy.nc.close()


async def test_a_forged_resolve_on_the_attackers_own_subject_is_refused(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]],  # noqa: F811
) -> None:
    server, auths = locked_down
    memory = AsyncAgent("memory", servers=server.url, auth=auths["memory"])
    ops = AsyncAgent("ops", servers=server.url, auth=auths["ops"])
    deploy = AsyncAgent("deploy", servers=server.url, auth=auths["deploy"])
    forged_in = asyncio.Event()
    asked: asyncio.Queue[Message] = asyncio.Queue()

    @memory.on_message
    async def answer(msg: Message) -> None:  # answers only once the forgery is on its way
        await asked.put(msg)
        await forged_in.wait()
        await memory.resolve(msg.session, f"the real answer to {msg.payload}")

    async with memory, ops, deploy:
        for agent in (memory, ops, deploy):
            await agent.register()
        js = deploy._js
        assert js is not None
        for round_ in range(ROUNDS):
            forged_in.clear()
            message_id = str(uuid.uuid4())
            session = session_for("ops", message_id)  # say the attacker learned the session id
            pending = asyncio.create_task(ops.request("memory", f"question {round_}", message_id=message_id,
                                                      timeout=15))
            got = await asyncio.wait_for(asked.get(), 15)
            assert got.session == session
            # deploy publishes a resolve of ops's session as itself, on its own subject to ops (allowed) ...
            await js.publish(inbox_subject("ops", "deploy"),
                             encode_envelope(forged_resolve(session, "ops", "forged: zero rollbacks")))
            # ... and, through the SDK, with a record of its own naming memory as the peer of that session.
            await js.publish(f"$KV.mesh_sessions.deploy.{session}", forged_record("memory", resolved=False))
            await deploy.send(session, "forged: from deploy's own record")  # goes to memory, as deploy
            await asyncio.sleep(0.2)  # the forgeries arrive first
            forged_in.set()
            reply = await pending
            assert (reply.from_handle, reply.payload) == ("memory", f"the real answer to question {round_}")
        # the message deploy sent on its own record never reached memory's handler
        assert asked.empty()


async def test_a_reply_goes_to_the_asker_whatever_another_agent_writes(
    locked_down: tuple[NatsServer, dict[str, NatsAuth]],  # noqa: F811
    make_daemon: DaemonFactory,
) -> None:
    """The redirect attack against the real daemon: deploy cannot rewrite the record @memory routes by, and
    @memory's answer to ops (``memory-agent ask`` uses request()) reaches ops and only ops."""
    server, auths = locked_down
    await make_daemon(server.url, nats={"nkey_seed_file": str(auths["memory"].nkey_seed_file)},
                      security={"authenticated_senders": True, "admins": ["ops"]})
    ops = AsyncAgent("ops", servers=server.url, auth=auths["ops"])
    deploy = AsyncAgent("deploy", servers=server.url, auth=auths["deploy"])
    deploy_got: list[Any] = []

    @deploy.on_message
    async def steal(msg: Message) -> None:
        deploy_got.append(msg)

    spy = Intruder()
    try:
        async with ops, deploy:
            await ops.register()
            await deploy.register()
            nc = await spy.connect(server.url, auths["deploy"], "deploy")
            for _ in range(ROUNDS):
                message_id = str(uuid.uuid4())
                session = session_for("ops", message_id)
                subject = f"$KV.mesh_sessions.memory.{session}"
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.jetstream().publish(subject, forged_record("deploy"), timeout=1.0)
                assert await spy.denied(f'Publish to "{subject}"')
                spy.errors.clear()
                reply = await ops.request("memory", json.dumps({"op": "stats"}), content_type="application/json",
                                          message_id=message_id, timeout=30)
                assert reply.from_handle == "memory" and json.loads(reply.payload)["handle"] == "memory"
            with pytest.raises(SessionNotFound):  # deploy has no record of ops's session: it is none of its
                await deploy.send(session, "let me in")
            await asyncio.sleep(0.3)
            assert deploy_got == []
    finally:
        if spy.nc is not None:
            await spy.nc.close()
