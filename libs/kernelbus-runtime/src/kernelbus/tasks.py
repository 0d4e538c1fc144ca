"""Stopping background tasks for good.

Python 3.11's `asyncio.wait_for` loses a cancellation that arrives in the same loop turn as
the result it waits for (CPython gh-86296, fixed in 3.12): it returns the result and the
cancelled task runs on to its next `await`. nats-py waits that way for every message
(`Subscription.next_msg`, so `PullSubscription.fetch`) and every reply (`request`), so a
loop task cancelled once while messages flow can keep running and a stop that awaits it
never returns (ADR 0030).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

AGAIN_AFTER = 0.5
"""Seconds a cancelled task may take to end before it is cancelled again."""


async def cancel_and_wait(
    *tasks: asyncio.Task[Any] | None, again_after: float = AGAIN_AFTER
) -> None:
    """Cancel every task and return once all have ended, whatever each raised.

    A task still running `again_after` seconds after a cancellation is cancelled again,
    until it ends: only a task that ignores every cancellation outright keeps this waiting.
    Exceptions of the tasks are retrieved (not raised): the caller is stopping them.
    """
    given = [task for task in tasks if task is not None]
    running = {task for task in given if not task.done()}
    for task in running:
        task.cancel()
    while running:
        _, running = await asyncio.wait(running, timeout=again_after)
        for task in running:
            log.info(
                "task %s still running after its cancellation; cancelling again", task.get_name()
            )
            task.cancel()
    for ended in given:
        if not ended.cancelled():
            ended.exception()
