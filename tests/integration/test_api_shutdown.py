"""Shutting down with NATS gone: `kernelbus.bus.close` never raises, and the api (which uses
it in its lifespan) exits cleanly instead of failing in `drain()` with
`ConnectionReconnectingError`."""

from __future__ import annotations

import asyncio
import signal

import pytest

from kernelbus import bus
from kernelbus.natsserver import NatsServer
from kernelbus.processes import wait_for
from kernelbus.settings import BusSettings
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration


async def test_close_drains_a_connected_client(fresh_nats: NatsServer) -> None:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), name="close-test")
    handled: list[bytes] = []

    async def slow_handler(msg: object) -> None:
        await asyncio.sleep(0.2)  # still running when close() starts: drain must wait for it
        handled.append(b"done")

    await nc.subscribe("close.test", cb=slow_handler)
    await nc.publish("close.test", b"x")
    await nc.flush()
    await bus.close(nc)
    assert nc.is_closed
    assert handled == [b"done"]


async def test_close_while_reconnecting_does_not_raise(fresh_nats: NatsServer) -> None:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), name="close-test")
    fresh_nats.stop()
    await asyncio.to_thread(wait_for, lambda: not nc.is_connected, 10, "the disconnect")
    await bus.close(nc)
    assert nc.is_closed
    await bus.close(nc)  # closing twice is harmless too


async def test_api_exits_cleanly_when_nats_is_gone(
    services: Services, fresh_nats: NatsServer
) -> None:
    api = services.api(nats_url=fresh_nats.url)
    fresh_nats.stop()
    wait_for(lambda: "disconnected from nats" in api.service.log(), 30, "the disconnect")
    api.service.stop()
    log = api.service.log()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit.
    assert api.service.process.returncode in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    assert "Traceback" not in log
