"""How a service's start fails: its composition root releases what it acquired so far (an
`AsyncExitStack`), then the entry point prints one clear line and exits with status 1."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kernelbus import bus
from kernelbus.errors import describe_error
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext


class StartFailed(Exception):
    """A service could not start; what it had acquired has been released."""


@asynccontextmanager
async def starting(service: str) -> AsyncIterator[None]:
    """Wrap a start-up: any failure inside becomes `StartFailed` naming the service and why."""
    try:
        yield
    except Exception as exc:
        raise StartFailed(f"{service} could not start: {describe_error(exc)}") from exc


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: a service's main awaits it, then stops in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_service(
    service: str,
    main: Coroutine[Any, Any, None],
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run,
) -> None:
    """`run(main)` (asyncio's, or uvloop's); a `StartFailed` is printed as one line on
    stderr, exit status 1."""
    try:
        run(main)
    except StartFailed as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


@dataclass(frozen=True)
class BusHandles:
    nc: Client
    js: JetStreamContext
    connectivity: bus.Connectivity


async def open_bus(
    stack: AsyncExitStack, settings: BusSettings, name: str, role: str
) -> BusHandles:
    """Connect (the connection is closed by `stack`) and make sure the streams and buckets
    exist: the first steps of every service's start."""
    connectivity = bus.Connectivity()
    nc = await bus.connect(settings, name=name, role=role, connectivity=connectivity)
    stack.push_async_callback(bus.close, nc)
    js = nc.jetstream()
    await bus.ensure_infrastructure(js, settings.nats_replicas)
    return BusHandles(nc, js, connectivity)


async def open_registry(stack: AsyncExitStack, handles: BusHandles, view: bool) -> Registry:
    """The registry; with `view`, its watch-fed view too (closed by `stack`)."""
    registry = await Registry.open(handles.js, handles.nc)
    if view:
        await registry.start_view(handles.nc)
        stack.push_async_callback(registry.close_view)
    return registry
