"""Composition root of the api: `create_app(settings)` wires every piece; nothing is built at
import time, so tests pass their own settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kernelbus import bus
from kernelbus.registry import Registry
from kernelbus_api.settings import ApiSettings
from kernelbus_api.state import AppState


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await bus.connect(settings, name=settings.api_instance)
        js = nc.jetstream()
        await bus.ensure_infrastructure(js)
        app.state.kb = AppState(settings, nc, js, await Registry.open(js))
        try:
            yield
        finally:
            await nc.drain()

    app = FastAPI(title="Kernelbus", lifespan=lifespan)
    return app
