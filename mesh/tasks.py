"""Stopping a background task for sure: cancelled again until it has ended.

On Python 3.11 ``asyncio.wait_for`` loses a cancellation that arrives in the same event-loop iteration as
the result it waits for (CPython gh-86296, bpo-42130; fixed in 3.12, where ``wait_for`` is built on
``asyncio.timeout``): it returns the result and the task runs on. nats-py wraps every request, flush and
connect in ``wait_for``, so a loop that polls NATS and is cancelled just as a reply comes in goes on to its
next ``sleep`` instead of ending, and ``task.cancel(); await task`` then waits forever (seen as a hang of
``MemoryDaemon.close()`` under load, in its inbox watcher). :func:`cancel_and_wait` cancels again while the
task is still running.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["cancel_and_wait"]

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[object] | None, *, every: float = 1.0) -> BaseException | None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``every`` seconds while it runs
    (a cancellation lost in a ``wait_for``, see the module docstring, lands on the task's next await).

    Returns the exception the task ended with (None when it was cancelled or returned): the caller decides
    whether to log it; nothing is raised for it. ``None`` or a task that is done already returns at once; the
    current task is never cancelled (a task stopping itself returns at once). Cancelling the caller stops the
    wait (the task is left cancelled, not awaited).
    """
    if task is None or task is asyncio.current_task():
        return None
    cancels = 0
    while not task.done():
        if cancels:
            log.debug("task %s still running %d cancellation(s) later (lost in a wait_for, CPython gh-86296); "
                      "cancelling it again", task.get_name(), cancels)
        task.cancel()
        cancels += 1
        await asyncio.wait({task}, timeout=every)
    return None if task.cancelled() else task.exception()
