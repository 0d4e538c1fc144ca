"""The launcher's supervisor learns of a child's exit from the kernel (a pidfd), not from
polling: with polling pushed out to an hour, a killed child is still restarted, and so is its
successor when that one is killed in turn (real processes; the decisions themselves are in
tests/unit/test_supervision.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from kernelbus.children import ServiceChild
from kernelbus.supervision import Restart, RestartPolicy, Supervisor
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
NO_POLLING = 3600.0


async def test_a_killed_child_is_restarted_without_polling(tmp_path: Path) -> None:
    child = ServiceChild("sleeper", SLEEPER, {}, tmp_path)
    child.start()
    reported: list[Restart] = []

    async def report(restart: Restart) -> None:
        reported.append(restart)

    policy = RestartPolicy(max_restarts=5, window=60, initial=0.0, maximum=0.0)
    supervisor = Supervisor([child], lambda: policy, report, poll_interval=NO_POLLING)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    try:
        first = child.pid
        await until(lambda: supervisor.waits_for_exit("sleeper"), what="the first exit watched")
        os.kill(first, signal.SIGKILL)
        await until(lambda: len(reported) == 1, timeout=60, what="the first restart")
        second = child.pid
        assert second != first and child.alive()
        assert reported[0] == Restart("sleeper", -signal.SIGKILL, 1, 0.0, second)

        await until(lambda: supervisor.waits_for_exit("sleeper"), what="the second exit watched")
        os.kill(second, signal.SIGKILL)  # the restarted process is watched as well
        await until(lambda: len(reported) == 2, timeout=60, what="the second restart")
        assert child.pid not in (first, second) and child.alive()
        stop.set()
        assert await asyncio.wait_for(running, 10) is None
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        child.stop(5)
    assert not child.alive()
