"""An asyncio event loop on its own daemon thread: what the blocking twins (``mesh.SyncAgent``,
``memory_agent.sync.SyncMemoryClient``) run their async counterparts on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import MeshError

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A running event loop on a daemon thread named ``name``; :meth:`run` blocks on a coroutine there,
    :meth:`stop` ends the thread (waiting up to 10 s) and closes the loop once it has."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], *, owner: str) -> T:
        """Run ``coro`` on the loop and return its result. Raises MeshError (naming ``owner``) when called
        from the loop's own thread, where blocking would wait forever."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise MeshError(f"blocking {owner} methods cannot be called from its own loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Stop the loop and its thread; idempotent."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
