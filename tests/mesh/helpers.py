"""Helpers shared by the mesh tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mesh import AsyncAgent, Message, RoomEvent

Factory = Callable[..., Awaitable[AsyncAgent]]


def inbox(agent: AsyncAgent) -> asyncio.Queue[Any]:
    """Route the agent's messages (and room events) into a queue."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    @agent.on_message
    async def _handle(msg: Message | RoomEvent) -> None:
        await queue.put(msg)

    return queue


async def next_msg(queue: asyncio.Queue[Any], timeout: float = 10.0) -> Any:
    return await asyncio.wait_for(queue.get(), timeout)


async def next_event(queue: asyncio.Queue[Any], timeout: float = 10.0) -> RoomEvent:
    """The next item, which must be a room event."""
    item = await asyncio.wait_for(queue.get(), timeout)
    assert isinstance(item, RoomEvent), item
    return item


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    """Poll ``check`` every 20 ms until it is true or ``timeout`` s passed; returns its last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
