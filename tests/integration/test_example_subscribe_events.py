"""examples/subscribe_events.py, run as a user runs it, prints the events published on the bus
(and only those its subject filter selects)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, events, natsserver
from kernelbus.eventpublisher import EventPublisher
from kernelbus.processes import ServiceProcess, spawn
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "subscribe_events.py"


@pytest.fixture
async def private_nats(fresh_nats: natsserver.NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(fresh_nats.url)
    await bus.ensure_infrastructure(nc.jetstream())
    yield nc
    await nc.drain()


def _run_example(services: Services, nats_url: str, *args: str) -> ServiceProcess:
    env = {"NATS_URL": nats_url, "PYTHONUNBUFFERED": "1"}
    process = spawn("subscribe-events", [sys.executable, str(EXAMPLE), *args], env, services.root)
    services.started.append(process)  # stopped by pid with the rest
    return process


async def _printed(process: ServiceProcess, publisher: EventPublisher, kernel_id: str) -> str:
    """Publish kernel_actions for `kernel_id` until the example prints one (it starts at new
    events, so the first ones may precede its subscription); its output then."""
    data = {"action": "start", "status": "success", "msg": "m", "kernel_id": kernel_id}
    async with asyncio.timeout(60):
        while kernel_id not in process.log():
            assert process.process.poll() is None, process.log()
            await publisher.emit(events.KERNEL_ACTIONS, data)
            await publisher.flush()
            await asyncio.sleep(0.2)
    return process.log()


async def test_the_example_prints_published_events(
    services: Services, private_nats: Client, fresh_nats: natsserver.NatsServer
) -> None:
    everything = _run_example(services, fresh_nats.url)
    gateway_only = _run_example(services, fresh_nats.url, "kb.events.*.gateway_client.*")
    publisher = await EventPublisher.open(private_nats.jetstream(), "example-test")
    try:
        kernel_id = str(uuid.uuid4())
        output = await _printed(everything, publisher, kernel_id)
        line = next(x for x in output.splitlines() if kernel_id in x)
        assert " kernel_actions " in line and "'action': 'start'" in line
        gateway = {"status": "success", "msg": f"gateway-{kernel_id}"}
        async with asyncio.timeout(60):
            while f"gateway-{kernel_id}" not in gateway_only.log():
                assert gateway_only.process.poll() is None, gateway_only.log()
                await publisher.emit(events.GATEWAY_CLIENT, gateway)
                await publisher.flush()
                await asyncio.sleep(0.2)
        # The filtered subscriber never printed a kernel action.
        assert kernel_id not in gateway_only.log().replace(f"gateway-{kernel_id}", "")
    finally:
        await publisher.close()
