"""SyncAgent: the same API, blocking, with plain-function handlers that call back into the agent."""

from __future__ import annotations

import threading

import pytest

from mesh import HandleNotFound, Manifest, MeshError, Message, SessionClosed, SyncAgent


def test_sync_agents_round_trip(nats_url: str) -> None:
    with SyncAgent("memory", servers=nats_url, manifest=Manifest(tags=("memory",))) as memory, \
            SyncAgent("script", servers=nats_url) as script:
        threads: list[str] = []

        @memory.on_message
        def answer(msg: Message) -> None:
            threads.append(threading.current_thread().name)
            memory.resolve(msg.session, f"you said {msg.payload}")

        memory.register()
        script.register()
        reply = script.request("memory", "hello", trace_id="t-sync", timeout=10)
        assert (reply.payload, reply.message_type, reply.trace_id) == ("you said hello", "session_resolve",
                                                                        "t-sync")
        assert threads and threads[0] != threading.current_thread().name
        with pytest.raises(SessionClosed):
            script.send(reply.session, "late")
        with pytest.raises(HandleNotFound):
            script.open_session("ghost", "hi")
        assert [e.handle for e in script.list_handles(tags=["memory"])] == ["memory"]
        assert script.introspect("memory").online
        assert [m.handle for m in script.find_handles(tags=["memory"])] == ["memory"]
    with pytest.raises(MeshError, match="closed"):
        script.send(reply.session, "after close")


def test_blocking_call_from_the_loop_thread_is_refused(nats_url: str) -> None:
    with SyncAgent("memory", servers=nats_url) as memory, SyncAgent("script", servers=nats_url) as script:
        errors: list[BaseException] = []

        @memory.on_message
        async def wrong(msg: Message) -> None:
            try:
                memory.resolve(msg.session, "x")  # would deadlock: refused instead
            except MeshError as exc:
                errors.append(exc)
            await memory.async_agent.resolve(msg.session, "the async way")

        memory.register()
        script.register()
        assert script.request("memory", "hi", timeout=10).payload == "the async way"
        assert len(errors) == 1 and "loop thread" in str(errors[0])
