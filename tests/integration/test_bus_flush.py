"""`bus.flush`: a flush that times out leaves the client reading (nats-py 2.16's own flush,
on timeout, leaves a cancelled PING future queued; the late PONG then stops the client's
read loop for good, so a frozen moment on a loaded machine made a service deaf)."""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import pytest

from kernelbus import bus, natsserver
from kernelbus.errors import BusTimeout
from kernelbus.processes import pid_stopped, wait_for

pytestmark = pytest.mark.integration


async def test_a_flush_that_times_out_leaves_the_connection_working(
    fresh_nats: natsserver.NatsServer,
) -> None:
    nc = await nats.connect(fresh_nats.url)
    try:
        sub = await nc.subscribe("flush.test")
        pid = fresh_nats.process.pid
        os.kill(pid, signal.SIGSTOP)  # the server answers nothing
        try:
            await asyncio.to_thread(wait_for, lambda: pid_stopped(pid), 30, "the stop")
            with pytest.raises(BusTimeout):
                await bus.flush(nc, timeout=0.5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(bus.flush(nc, timeout=30), 0.5)  # cancelled
        finally:
            os.kill(fresh_nats.process.pid, signal.SIGCONT)
        # The PONGs arrive late: the client still reads what the server sends.
        await bus.flush(nc, timeout=30)
        await nc.publish("flush.test", b"after")
        msg = await sub.next_msg(timeout=30)
        assert msg.data == b"after"
    finally:
        await nc.close()
