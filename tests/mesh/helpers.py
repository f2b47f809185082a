"""Helpers shared by the mesh tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mesh import AsyncAgent, Message

Factory = Callable[..., Awaitable[AsyncAgent]]


def inbox(agent: AsyncAgent) -> asyncio.Queue[Message]:
    """Route the agent's messages into a queue."""
    queue: asyncio.Queue[Message] = asyncio.Queue()

    @agent.on_message
    async def _handle(msg: Message) -> None:
        await queue.put(msg)

    return queue


async def next_msg(queue: asyncio.Queue[Message], timeout: float = 10.0) -> Message:
    return await asyncio.wait_for(queue.get(), timeout)
