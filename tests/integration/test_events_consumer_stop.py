"""The events consumer stops while events flow, every time (ADR 0030).

nats-py waits for each fetched message with Python 3.11's `asyncio.wait_for`, which loses a
cancellation that comes in the same loop turn as a message. A consumer cancelled once could
then keep pulling for ever, and the events service's shutdown with it: `docker compose stop`
had to SIGKILL it. Here a real nats-server delivers a steady flood while the consumer is
started and stopped again and again, each stop at a random moment.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, events, natsserver
from kernelbus.eventpublisher import EventPublisher
from kernelbus.schemas import event_registry
from kernelbus.tasks import cancel_and_wait
from kernelbus_events.consumer import EventConsumer
from kernelbus_events.settings import EventsSettings
from kernelbus_events.store import EventStore
from kernelbus_events.tail import Tail

pytestmark = pytest.mark.integration

STOPS = 400
STOP_BOUND = 10.0  # a correctness bound, not a speed target: a lost cancellation never ends


@pytest.fixture
async def nc(fresh_nats: natsserver.NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(fresh_nats.url)
    await bus.ensure_infrastructure(client.jetstream(), 1)
    yield client
    await client.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = EventStore(tmp_path / "events.sqlite")
    await opened.open()
    yield opened
    await opened.close()


async def _flood(nc: Client, stop: asyncio.Event) -> int:
    """Publish one valid event after another (core NATS, no ack wait) until `stop`."""
    template = EventPublisher(nc.jetstream(), "flood").build(
        events.KERNEL_ACTIONS,
        {"action": "start", "status": "success", "msg": "m", "kernel_id": str(uuid.uuid4())},
    )
    sent = 0
    while not stop.is_set():
        await nc.publish(template.subject, template.payload)
        sent += 1
        if sent % 20 == 0:
            await asyncio.sleep(0.001)
    return sent


async def test_the_consumer_stops_at_any_moment_while_events_flow(
    fresh_nats: natsserver.NatsServer, nc: Client, store: EventStore
) -> None:
    settings = EventsSettings(nats_url=fresh_nats.url, consumer="stop-test", batch=64)
    registry, tail = event_registry(), Tail()
    stop_flood = asyncio.Event()
    flood = asyncio.create_task(_flood(nc, stop_flood))
    hung = 0
    try:
        for _ in range(STOPS):
            consumer = EventConsumer(nc.jetstream(), settings, store, registry, tail)
            await consumer.start()
            await asyncio.sleep(random.uniform(0.0, 0.05))
            stopping = asyncio.create_task(consumer.stop())
            done, _ = await asyncio.wait({stopping}, timeout=STOP_BOUND)
            if not done:
                hung += 1
                await cancel_and_wait(stopping)
    finally:
        stop_flood.set()
        sent = await flood
    print(f"{STOPS} stops while {sent} events were published; {hung} never returned")
    assert sent > 0
    assert hung == 0, f"{hung} of {STOPS} stops did not return within {STOP_BOUND} s"
