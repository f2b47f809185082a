"""Per-key turns: work items with the same key run one at a time, in the order they entered. Pure asyncio.

The dispatcher gives sync handlers of one session (or one room) a lane, so they run in delivery
order as tailbus runs them, while different sessions still run side by side.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Lanes"]


class Lanes:
    """``turn = lanes.enter(key)`` (synchronous, so the order of calls is the order of turns), ``await
    turn`` until it is this item's turn, then ``lanes.leave(key, turn)`` when done (or cancelled)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        """Keys with an item running or waiting."""
        return len(self._queues)

    def enter(self, key: str) -> asyncio.Future[None]:
        """Queue an item under ``key``; the returned future is done when it is the item's turn."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, deque())
        queue.append(turn)
        if len(queue) == 1:
            turn.set_result(None)
        return turn

    def leave(self, key: str, turn: asyncio.Future[None]) -> None:
        """Remove the item (whether it ran or was cancelled while waiting) and start the next one."""
        queue = self._queues.get(key)
        if queue is None:
            return
        was_first = bool(queue) and queue[0] is turn
        try:
            queue.remove(turn)
        except ValueError:
            return
        if not queue:
            del self._queues[key]
        elif was_first and not queue[0].done():
            queue[0].set_result(None)
