"""mesh.tasks.cancel_and_wait: a background task is stopped for sure, even when it loses a cancellation in
``asyncio.wait_for`` (CPython gh-86296 on Python 3.11: nats-py wraps every request in ``wait_for``)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mesh.tasks import cancel_and_wait

pytestmark = pytest.mark.timeout(30)


class Poller:
    """A loop like the daemon's NATS pollers: wait for a reply (through ``wait_for``, as nats-py does), then
    sleep until the next poll. ``reply`` is the pending reply; ``polls`` counts finished polls."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting = asyncio.Event()
        self.polls = 0

    async def run(self) -> None:
        while True:
            self.waiting.set()
            await asyncio.wait_for(self.reply, 5.0)
            self.polls += 1
            await asyncio.sleep(3600)  # the next poll


async def test_a_cancellation_lost_in_wait_for_is_repeated_until_the_task_ends() -> None:
    poller = Poller()
    task = asyncio.create_task(poller.run())
    await poller.waiting.wait()
    poller.reply.set_result(None)  # the reply comes in the same loop iteration as the cancellation below
    async with asyncio.timeout(10):
        assert await cancel_and_wait(task, every=0.05) is None
    assert task.cancelled()
    if sys.version_info < (3, 12):  # the first cancellation was lost: the loop went on to its next sleep
        assert poller.polls == 1


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps the cancellation from Python 3.12 on")
async def test_a_single_cancel_is_lost_here_so_the_race_above_is_real() -> None:
    poller = Poller()
    task = asyncio.create_task(poller.run())
    await poller.waiting.wait()
    poller.reply.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and poller.polls == 1  # what `task.cancel(); await task` would wait on forever
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_what_the_task_ended_with_is_returned_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    await asyncio.wait({failed})
    assert isinstance(await cancel_and_wait(failed), RuntimeError)

    async def returns() -> None:
        return None

    finished = asyncio.create_task(returns())
    await asyncio.wait({finished})
    assert await cancel_and_wait(finished) is None
    assert await cancel_and_wait(None) is None


async def test_a_task_stopping_itself_is_not_cancelled() -> None:
    async def stops_itself() -> str:
        await cancel_and_wait(asyncio.current_task())  # type: ignore[arg-type]
        return "went on"

    assert await asyncio.create_task(stops_itself()) == "went on"


async def test_cancelling_the_caller_stops_the_wait() -> None:
    stubborn_until = asyncio.Event()

    async def stubborn() -> None:
        while not stubborn_until.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(cancel_and_wait(task, every=0.05))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # it keeps cancelling a task that does not end
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not task.done()
    stubborn_until.set()
    async with asyncio.timeout(5):
        assert await cancel_and_wait(task, every=0.05) is None
    assert task.done()
