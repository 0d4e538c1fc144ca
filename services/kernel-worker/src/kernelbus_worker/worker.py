"""Composition root of the kernel-worker: `run_worker(settings)` wires the pieces, runs until
SIGTERM/SIGINT, then shuts its kernels down (unless told to leave them) and says goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from kernelbus import bus, events, subjects
from kernelbus.events import EventPublisher
from kernelbus.registry import Registry
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


async def run_worker(settings: WorkerSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or _stop_on_signals()
    connectivity = bus.Connectivity()
    nc = await bus.connect(
        settings, name=f"worker-{settings.id}", role="worker", connectivity=connectivity
    )
    # First of all, and until the connection closes: the culler's liveness probe (ADR 0016).
    await bus.answer_pings(nc, subjects.worker_ping(settings.id))
    js = nc.jetstream()
    await bus.ensure_infrastructure(js, settings.nats_replicas)
    registry = await Registry.open(js)
    publisher = await EventPublisher.open(js, source=f"kernel-worker/{settings.id}")
    catalog = Catalog.create(settings.kernelspec_names)
    handlers: Handlers
    supervisor = Supervisor(
        settings,
        registry,
        MeteredOutbox(nc),
        publisher,
        catalog,
        on_added=lambda k: handlers.kernel_added(k),
        on_removed=lambda k: handlers.kernel_removed(k),
    )
    liveness = ApiLiveness(nc, supervisor, connectivity, settle=_settle(settings))

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
    handlers = Handlers(nc, supervisor, catalog, settings.id, liveness)
    started_at = utcnow()
    await handlers.subscribe_worker()
    await supervisor.adopt_orphans()
    await supervisor.reap_leftovers()
    await registry.put_heartbeat(heartbeat(settings, supervisor, catalog, started_at))
    await publisher.emit(events.WORKER_STARTED, _worker_event(settings, []))
    log.info("kernel-worker ready", extra={"worker_id": settings.id})
    loops = [
        asyncio.create_task(httpserver.serve(settings, supervisor)),
        asyncio.create_task(
            _every(
                settings.heartbeat_interval,
                lambda: registry.put_heartbeat(
                    heartbeat(settings, supervisor, catalog, started_at)
                ),
                when=lambda: connectivity.connected,
                early=supervisor.load_changed,
            )
        ),
        asyncio.create_task(
            _every(
                settings.activity_write_interval,
                supervisor.flush_activity,
                when=lambda: connectivity.connected,
            )
        ),
        asyncio.create_task(_every(settings.heartbeat_interval, supervisor.refill_pool)),
        asyncio.create_task(_every(settings.api_check_interval, liveness.check)),
        asyncio.create_task(
            _every(
                KEEPER_SYNC_INTERVAL, supervisor.sync_keeper, when=lambda: bool(supervisor.kernels)
            )
        ),
    ]
    try:
        await stop.wait()
    finally:
        log.info("kernel-worker stopping", extra={"worker_id": settings.id})
        await handlers.unsubscribe_worker()
        kernel_ids = list(supervisor.kernels)
        if settings.shutdown_kernels_on_exit:
            await supervisor.shutdown_all()
            await supervisor.stop_keeper()
        for task in loops:
            task.cancel()
        await registry.remove_worker(settings.id)
        await publisher.emit(events.WORKER_STOPPED, _worker_event(settings, kernel_ids))
        await publisher.close()
        await bus.close(nc)


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


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
