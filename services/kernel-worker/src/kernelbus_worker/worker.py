"""Composition root of the kernel-worker: `run_worker(settings)` wires the pieces, runs until
SIGTERM/SIGINT, then shuts its kernels down (unless told to leave them) and says goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from kernelbus import bus, events, subjects
from kernelbus.errors import KernelbusError
from kernelbus.eventpublisher import EventPublisher
from kernelbus.memory import release_freed_memory
from kernelbus.registry import Registry
from kernelbus.startup import open_bus, open_registry, starting, stop_on_signals
from kernelbus.tasks import cancel_and_wait
from kernelbus.timefmt import utcnow
from kernelbus_worker import httpserver
from kernelbus_worker.handlers import Handlers
from kernelbus_worker.heartbeat import heartbeat
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.liveness import ApiLiveness
from kernelbus_worker.metrics import MeteredOutbox
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.supervisor import Supervisor

log = logging.getLogger(__name__)

KEEPER_SYNC_INTERVAL = 0.5
"""Seconds between acks to the iopub keeper (what a successor re-sends after a crash)."""
MEMORY_RELEASE_INTERVAL = 5.0
"""Seconds between checks for removed kernels whose memory goes back to the system (a full
garbage collection and a heap walk: not after every removal when many go at once)."""


async def run_worker(settings: WorkerSettings, stop: asyncio.Event | None = None) -> None:
    """Start, run until `stop` (default: SIGTERM/SIGINT), stop.

    Every resource is entered into one exit stack as it is acquired, so a start failing
    half-way releases what was acquired so far, in reverse order, exactly as a stop does,
    and raises `StartFailed` saying why.
    """
    stop = stop or stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        async with starting("kernel-worker"):
            await _start(settings, stack)
        await stop.wait()
        log.info("kernel-worker stopping", extra={"worker_id": settings.id})


async def _start(settings: WorkerSettings, stack: contextlib.AsyncExitStack) -> None:
    handles = await open_bus(stack, settings, name=f"worker-{settings.id}", role="worker")
    nc, js, connectivity = handles.nc, handles.js, handles.connectivity
    # First of all, and until the connection closes: the culler's liveness probe (ADR 0016).
    await bus.answer_pings(nc, subjects.worker_ping(settings.id))
    registry = await open_registry(stack, handles, view=False)
    publisher = await EventPublisher.open(
        js, source=f"kernel-worker/{settings.id}", connected=lambda: connectivity.connected
    )
    stack.push_async_callback(publisher.close)
    catalog = Catalog.create(settings.kernelspec_names)
    supervisor = Supervisor(settings, registry, MeteredOutbox(nc), publisher, catalog)
    liveness = ApiLiveness(nc, supervisor, connectivity, settle=_settle(settings))
    handlers = Handlers(nc, supervisor, catalog, settings.id, liveness)
    supervisor.observer = handlers
    _follow_connectivity(connectivity, supervisor, liveness)
    farewell = _Farewell(settings, registry, publisher, connectivity)
    stack.push_async_callback(farewell.say)
    running = _Running()
    # Stopped after the kernels, as before: a loop cancelled mid-way through a request to the
    # iopub keeper could leave that connection out of step for the kernels' shutdown.
    stack.push_async_callback(running.stop)
    stack.push_async_callback(_stop_kernels, settings, supervisor, farewell)
    started_at = utcnow()
    await handlers.subscribe_worker()
    stack.push_async_callback(handlers.unsubscribe_worker)
    # Heartbeats first: re-adopting kernels takes time (busy ones, many ones), and a
    # successor whose heartbeat ages out meanwhile is declared lost by the culler, which
    # marks the very kernels it is re-adopting dead.
    await registry.put_heartbeat(heartbeat(settings, supervisor, catalog, started_at))
    running.loops = [_heartbeats(settings, registry, supervisor, catalog, connectivity, started_at)]
    await supervisor.adopt_orphans()
    await _reclaim(registry, liveness, list(supervisor.kernels))
    await supervisor.reap_leftovers()
    supervisor.load_changed.set()  # the re-adopted kernels, in the next heartbeat at once
    await publisher.emit(events.WORKER_STARTED, _worker_event(settings, []))
    farewell.announced = True
    log.info("kernel-worker ready", extra={"worker_id": settings.id})
    running.loops += _loops(settings, supervisor, liveness, connectivity)
    running.server = await httpserver.start(settings, supervisor)


async def _reclaim(registry: Registry, liveness: ApiLiveness, adopted: list[str]) -> None:
    """The re-adopted kernels' websockets re-attach here (`ApiLiveness.reclaim`)."""
    if not adopted:
        return
    try:
        replicas = await registry.connection_replicas()
    except KernelbusError as exc:
        log.warning("cannot ask api replicas to re-attach: %s", exc)
        return
    await liveness.reclaim(replicas, adopted)


def _follow_connectivity(
    connectivity: bus.Connectivity, supervisor: Supervisor, liveness: ApiLiveness
) -> None:
    async def bus_lost() -> None:
        supervisor.bus_lost(liveness.last_seen)

    resumes: set[asyncio.Task[None]] = set()

    async def bus_back() -> None:
        supervisor.bus_back()
        # Not awaited here: the hook runs inside nats-py's reconnect, and pings take time.
        task = asyncio.create_task(liveness.resume_held())
        resumes.add(task)
        task.add_done_callback(resumes.discard)

    connectivity.on_disconnected.append(bus_lost)
    connectivity.on_reconnected.append(bus_back)


def _heartbeats(
    settings: WorkerSettings,
    registry: Registry,
    supervisor: Supervisor,
    catalog: Catalog,
    connectivity: bus.Connectivity,
    started_at: datetime,
) -> asyncio.Task[None]:
    """The heartbeat loop, started (the caller cancels it)."""

    async def beat() -> None:
        await registry.put_heartbeat(heartbeat(settings, supervisor, catalog, started_at))

    return asyncio.create_task(
        _every(
            settings.heartbeat_interval,
            beat,
            when=lambda: connectivity.connected,
            early=supervisor.load_changed,
        )
    )


def _loops(
    settings: WorkerSettings,
    supervisor: Supervisor,
    liveness: ApiLiveness,
    connectivity: bus.Connectivity,
) -> list[asyncio.Task[None]]:
    """The worker's other periodic tasks, started; the caller cancels them."""
    connected = lambda: connectivity.connected  # noqa: E731

    return [
        asyncio.create_task(
            _every(settings.activity_write_interval, supervisor.flush_activity, when=connected)
        ),
        asyncio.create_task(_every(settings.heartbeat_interval, supervisor.refill_pool)),
        asyncio.create_task(_every(MEMORY_RELEASE_INTERVAL, _memory_release(supervisor))),
        asyncio.create_task(_every(settings.api_check_interval, liveness.check)),
        asyncio.create_task(
            _every(
                KEEPER_SYNC_INTERVAL, supervisor.sync_keeper, when=lambda: bool(supervisor.kernels)
            )
        ),
    ]


def _memory_release(supervisor: Supervisor) -> Callable[[], Awaitable[None]]:
    """Gives the memory of removed kernels back to the system once they are gone (a kernel's
    large messages otherwise stay mapped after it: `kernelbus.memory`)."""
    seen = supervisor.removals

    async def release() -> None:
        nonlocal seen
        if supervisor.removals != seen:
            seen = supervisor.removals
            release_freed_memory()

    return release


@dataclass
class _Farewell:
    """Leaves the registry, and says so in the event stream if the start was announced."""

    settings: WorkerSettings
    registry: Registry
    publisher: EventPublisher
    connectivity: bus.Connectivity
    announced: bool = False
    kernel_ids: list[str] = field(default_factory=list)

    async def say(self) -> None:
        ids = {"worker_id": self.settings.id}
        if not self.connectivity.connected:
            # A request now would only wait out its timeout: the culler declares this worker
            # lost once its heartbeat ages out (ADR 0016).
            log.warning("cannot leave the registry: %s", self.connectivity.reason(), extra=ids)
        else:
            try:
                await self.registry.remove_worker(self.settings.id)
            except Exception as exc:  # the rest of the shutdown must still run
                log.warning("cannot leave the registry: %s", exc, extra=ids)
        if self.announced:
            event = _worker_event(self.settings, self.kernel_ids)
            await self.publisher.emit(events.WORKER_STOPPED, event)


async def _stop_kernels(
    settings: WorkerSettings, supervisor: Supervisor, farewell: _Farewell
) -> None:
    """Shut this worker's kernels down, unless told to leave them for a successor to adopt."""
    farewell.kernel_ids = list(supervisor.kernels)
    if settings.shutdown_kernels_on_exit:
        await supervisor.shutdown_all()
        await supervisor.stop_keeper()


@dataclass
class _Running:
    """The worker's loop tasks and metrics server, once started."""

    loops: list[asyncio.Task[None]] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def stop(self) -> None:
        """Cancel the loops and wait until they ended; close the server."""
        await cancel_and_wait(*self.loops)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _settle(settings: WorkerSettings) -> float:
    """Seconds connected before a missing api responder counts: time for every replica to
    reconnect and re-attach after a NATS restart (they retry every 0.5 s)."""
    return max(5.0, 3 * settings.api_check_interval)


def _worker_event(settings: WorkerSettings, kernel_ids: list[str]) -> dict[str, object]:
    return {
        "worker_id": settings.id,
        "hostname": socket.gethostname(),
        "max_kernels": settings.max_kernels,
        "kernel_ids": kernel_ids,
    }


async def _every(
    interval: float,
    action: Callable[[], Awaitable[None]],
    when: Callable[[], bool] = lambda: True,
    early: asyncio.Event | None = None,
) -> None:
    """Run `action` every `interval` s, or as soon as `early` is set; skipped while `when()`
    is false (registry writes while NATS is down would each wait out a timeout, then fail:
    they resume after it)."""
    while True:
        if early is None:
            await asyncio.sleep(interval)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(early.wait(), interval)
            early.clear()
        if not when():
            continue
        try:
            await action()
        except Exception:
            log.exception("periodic task failed")
