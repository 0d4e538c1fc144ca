"""Composition root of the events service: `create_app(settings)` wires every piece; nothing
is built at import time, so tests pass their own settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from kernelbus.schemas import event_registry
from kernelbus.startup import open_bus, starting
from kernelbus_events.consumer import EventConsumer
from kernelbus_events.metrics import EventsMetrics
from kernelbus_events.routes import health, metrics, router
from kernelbus_events.settings import EventsSettings
from kernelbus_events.state import AppState
from kernelbus_events.store import EventStore
from kernelbus_events.tail import Tail


async def open_state(settings: EventsSettings, stack: AsyncExitStack) -> AppState:
    """Acquire every resource of the service, each entered into `stack` as it is acquired,
    so a start failing half-way releases what it got so far, in reverse order."""
    registry = event_registry()
    store = EventStore(settings.db_path)
    await store.open()
    stack.push_async_callback(store.close)
    handles = await open_bus(
        stack, settings, name=f"kernelbus-events-{settings.consumer}", role="events"
    )
    nc, js = handles.nc, handles.js
    tail = Tail()
    counters = EventsMetrics(tail_subscribers=lambda: float(len(tail)))
    consumer = EventConsumer(js, settings, store, registry, tail, counters)
    await consumer.start()
    stack.push_async_callback(consumer.stop)
    return AppState(settings, nc, js, store, registry, tail, consumer, counters)


def create_app(settings: EventsSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            async with starting("events"):
                app.state.kb = await open_state(settings, stack)
            yield

    app = FastAPI(title="Kernelbus events", lifespan=lifespan)
    app.include_router(health)
    app.include_router(router)
    app.include_router(metrics)
    return app
