"""Composition root of the api: `create_app(settings)` wires every piece; nothing is built at
import time, so tests pass their own settings."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from kernelbus import subjects
from kernelbus.bounded import within
from kernelbus.bus_kv import Bucket
from kernelbus.bus_types import Client, Msg
from kernelbus.errors import KernelbusError
from kernelbus.eventpublisher import EventPublisher
from kernelbus.startup import open_bus, open_registry, starting
from kernelbus.tasks import cancel_and_wait
from kernelbus_api import drains, errors, metrics, openapi
from kernelbus_api.admission import Admission
from kernelbus_api.busguard import BusGuard
from kernelbus_api.channels import router as channels_router
from kernelbus_api.channels.hub import Hub
from kernelbus_api.cors import CorsMiddleware
from kernelbus_api.kernels import Kernels
from kernelbus_api.routes import kernels, kernelspecs, meta, sessions
from kernelbus_api.sessions import Sessions
from kernelbus_api.settings import ApiSettings
from kernelbus_api.state import AppState

log = logging.getLogger(__name__)


async def answer_pings(
    nc: Client,
    api_instance: str,
    reattach: Callable[[list[str]], None] = lambda ids: None,
    reattach_kernels: Callable[[list[str]], None] = lambda ids: None,
) -> None:
    """Workers ping each api replica that holds websockets: no responder means it died, and
    they start keeping its clients' output for their reconnect (see kernelbus_worker.liveness).

    A worker back from its own reconnect asks with `{"reattach": [conn_id, ...]}`: those of
    its connections that are still open are re-attached, so it sends what it held for them
    (this replica may never have lost the bus: in a cluster only the worker's node died).
    A worker that re-adopted a crashed worker's kernels asks with `{"reattach_kernels":
    [kernel_id, ...]}`: every websocket open here on those kernels is re-attached.
    """

    async def pong(msg: Msg) -> None:
        await msg.respond(b"")
        if msg.data:
            try:
                asked = json.loads(msg.data)
                conn_ids, kernel_ids = asked.get("reattach", []), asked.get("reattach_kernels", [])
            except (ValueError, AttributeError, RecursionError):
                return
            if isinstance(conn_ids, list) and conn_ids:
                reattach([str(i) for i in conn_ids])
            if isinstance(kernel_ids, list) and kernel_ids:
                reattach_kernels([str(i) for i in kernel_ids])

    await nc.subscribe(subjects.api_ping(api_instance), cb=pong)


def _reattach(app: FastAPI, conn_ids: list[str]) -> None:
    hub = getattr(app.state, "kb_channels", None)  # created with the first websocket
    if hub is not None:
        hub.reattach(conn_ids)


def _reattach_kernels(app: FastAPI, kernel_ids: list[str]) -> None:
    hub = getattr(app.state, "kb_channels", None)
    if hub is not None:
        hub.reattach_kernels(kernel_ids)


async def open_state(settings: ApiSettings, stack: AsyncExitStack) -> AppState:
    """Acquire every resource of the api, each entered into `stack` as it is acquired, so a
    start failing half-way releases what it got so far, in reverse order."""
    handles = await open_bus(stack, settings, name=settings.api_instance, role="api")
    nc, js = handles.nc, handles.js
    registry = await open_registry(stack, handles, view=True)
    admission = Admission(
        kv=await Bucket.open(nc, subjects.STARTS_BUCKET),
        registry=registry,
        max_kernels=settings.max_kernels,
        max_per_user=settings.max_kernels_per_user,
    )
    publisher = await EventPublisher.open(
        js, source=f"api/{settings.api_instance}", connected=lambda: handles.connectivity.connected
    )
    stack.push_async_callback(publisher.close, 2)
    drains_kv = await Bucket.open(nc, subjects.DRAINS_BUCKET)
    kernel_manager = Kernels(settings, nc, registry, admission, drains_kv, publisher)
    session_manager = Sessions(await Bucket.open(nc, subjects.SESSIONS_BUCKET), kernel_manager)
    return AppState(
        settings, nc, js, registry, kernel_manager, session_manager, handles.connectivity
    )


async def _stop_flush(sessions: Sessions, task: asyncio.Task[None]) -> None:
    """Stop the session flush task; one last bounded try for writes still pending (ADR 0023:
    a replica that stops before JetStream takes them loses them)."""
    await cancel_and_wait(task)
    if sessions.writes.pending():
        try:
            await within(sessions.flush())
        except KernelbusError as exc:
            log.warning("pending session writes lost at shutdown: %s", exc.message)


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            async with starting("api"):
                state = await open_state(settings, stack)
                hub = Hub.create(state)
                stack.push_async_callback(hub.aclose)
                await hub.start()
                app.state.kb = state
                app.state.kb_channels = hub
                await answer_pings(
                    state.nc,
                    settings.api_instance,
                    lambda ids: _reattach(app, ids),
                    lambda ids: _reattach_kernels(app, ids),
                )
                flushing = asyncio.create_task(state.sessions.flush_forever())
                stack.push_async_callback(_stop_flush, state.sessions, flushing)
            yield

    prefix = settings.prefix
    app = FastAPI(
        title="Kernelbus",
        description="Jupyter kernel gateway on NATS: Jupyter Kernel Gateway's REST API.",
        version=meta.KERNELBUS_VERSION,
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BusGuard)
    app.add_middleware(CorsMiddleware, settings=settings)
    for router in (
        meta.open_router,
        meta.router,
        kernelspecs.router,
        kernels.router,
        sessions.router,
        drains.router,
    ):
        app.include_router(router, prefix=prefix)
    app.include_router(channels_router, prefix=prefix)
    metrics.install(app, settings)
    return app
