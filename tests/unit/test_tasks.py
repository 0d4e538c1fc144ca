"""`cancel_and_wait`: a task that loses a cancellation (as Python 3.11's `wait_for` makes
one do) is cancelled again until it ends; the tasks' own errors are not raised."""

from __future__ import annotations

import asyncio

import pytest

from kernelbus.tasks import cancel_and_wait


class Loop:
    """A loop that runs on after its first `ignore` cancellations, as one whose cancellation
    was swallowed does."""

    def __init__(self, ignore: int) -> None:
        self.ignore = ignore
        self.cancellations = 0
        self.cancelled_again = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancellations += 1
                if self.cancellations > 1:
                    self.cancelled_again.set()
                if self.cancellations > self.ignore:
                    raise


async def _started(loop: Loop) -> asyncio.Task[None]:
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0)
    return task


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    loop = Loop(ignore=2)
    task = await _started(loop)
    await asyncio.wait_for(cancel_and_wait(task, again_after=0.01), 10)
    assert task.cancelled() and loop.cancellations == 3


async def test_a_plain_cancel_is_enough_for_a_well_behaved_task() -> None:
    loop = Loop(ignore=0)
    task = await _started(loop)
    await cancel_and_wait(task, again_after=3600)
    assert task.cancelled() and loop.cancellations == 1


async def test_ended_failed_and_absent_tasks_are_accepted_and_nothing_is_raised() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait({failed, finished})
    running = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait(failed, None, finished, running)
    assert failed.done() and finished.done() and running.cancelled()


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    loop = Loop(ignore=10**9)
    stubborn = await _started(loop)
    stopping = asyncio.create_task(cancel_and_wait(stubborn, again_after=0.01))
    await loop.cancelled_again.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert loop.cancellations > 1
    loop.ignore = 0
    await cancel_and_wait(stubborn)
    assert stubborn.cancelled()
