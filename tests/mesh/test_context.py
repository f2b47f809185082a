"""mesh.context: the message being handled is the current one in the handler and what it calls (async and
sync handlers), and nowhere else."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from mesh import AsyncAgent, Message
from mesh.context import current_message, current_trace_id

pytestmark = pytest.mark.timeout(30)


async def _nested() -> str | None:
    await asyncio.sleep(0)
    return current_trace_id()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_the_handled_message_is_current_inside_its_handler_only(kind: str, mesh_agent: Any) -> None:
    seen: list[tuple[str | None, str | None, bool]] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    receiver: AsyncAgent = await mesh_agent("receiver", register=False)

    if kind == "async":
        @receiver.on_message
        async def on_async(msg: Message) -> None:
            current = current_message()
            seen.append((current.message_id if current else None, await _nested(), True))
            done.set()
    else:
        @receiver.on_message
        def on_sync(msg: Message) -> None:
            current = current_message()
            on_worker = threading.current_thread() is not threading.main_thread()
            seen.append((current.message_id if current else None, current_trace_id(), on_worker))
            loop.call_soon_threadsafe(done.set)

    await receiver.register()
    sender = await mesh_agent("sender")
    opened = await sender.open_session("receiver", "hello", trace_id="t-context")
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [(opened.message_id, "t-context", True)]
    assert current_message() is None and current_trace_id() is None
