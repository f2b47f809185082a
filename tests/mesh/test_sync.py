"""SyncAgent: the same API, blocking, with plain-function handlers that call back into the agent."""

from __future__ import annotations

import threading

import pytest

from mesh import HandleNotFound, Manifest, MeshError, Message, RoomClosed, RoomEvent, SessionClosed, SyncAgent


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


def test_sync_agents_in_a_room(nats_url: str) -> None:
    with SyncAgent("lead", servers=nats_url) as lead, SyncAgent("scribe", servers=nats_url) as scribe:
        seen: list[tuple[int, str]] = []
        done = threading.Event()

        @scribe.on_message
        def take_notes(msg: Message | RoomEvent) -> None:  # a plain function on a worker thread
            if isinstance(msg, RoomEvent) and msg.event_type == "message_posted":
                seen.append((msg.room_seq, msg.payload))
                if msg.payload == "last":
                    scribe.post_room_message(msg.room_id, f"noted {len(seen)}")  # blocking call from a handler
                    done.set()

        lead.register()
        scribe.register()
        room_id = lead.create_room("sync room", ["scribe"])
        for text in ("first", "second", "last"):
            lead.post_room_message(room_id, text)
        assert done.wait(10)
        assert seen == [(1, "first"), (2, "second"), (3, "last")]  # one room's sync handlers take turns, in order
        assert [e.payload for e in lead.replay_room(room_id, since_seq=3)] == ["noted 3"]
        assert [r.room_id for r in scribe.list_rooms()] == [room_id]
        assert scribe.list_room_members(room_id) == ["lead", "scribe"]
        assert lead.close_room(room_id)
        with pytest.raises(RoomClosed):
            scribe.post_room_message(room_id, "too late")
