"""Composition root of the culler: `run(settings, stop)` opens the bus, wires every piece,
runs the culling and worker-loss loops until `stop` is set, and closes everything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kernelbus import bus, subjects
from kernelbus.bus_kv import Bucket
from kernelbus.eventpublisher import EventPublisher
from kernelbus.schemas import event_registry
from kernelbus.startup import open_bus, open_registry, starting
from kernelbus_culler import activity, health
from kernelbus_culler.culling import Culler
from kernelbus_culler.leases import Leases
from kernelbus_culler.settings import CullerSettings
from kernelbus_culler.worker_loss import WorkerLossHandler

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
"""Seconds a liveness probe waits for an answer; a timeout counts as alive (slow, not gone)."""


@dataclass
class Parts:
    """What `run` drives, wired by `_start`."""

    culler: Culler
    losses: WorkerLossHandler
    liveness: health.Liveness
    gate: BusGate


async def run(settings: CullerSettings, stop: asyncio.Event) -> None:
    """Run until `stop` is set. The view is rebuilt from the registry before the first pass.

    Every resource is entered into one exit stack as it is acquired: a start failing half-way
    releases what it got so far, in reverse order, and raises `StartFailed` saying why.
    """
    async with contextlib.AsyncExitStack() as stack:
        async with starting("culler"):
            parts = await _start(settings, stack)
        await _run_loops(settings, parts, stop)


async def _start(settings: CullerSettings, stack: contextlib.AsyncExitStack) -> Parts:
    handles = await open_bus(stack, settings, name=settings.culler_id, role="culler")
    nc, js, connectivity = handles.nc, handles.js, handles.connectivity
    registry = await open_registry(stack, handles, view=True)
    leases = Leases(await Bucket.open(nc, subjects.CULL_BUCKET), settings.culler_id)
    publisher = await EventPublisher.open(
        js, settings.culler_id, connected=lambda: connectivity.connected
    )
    stack.push_async_callback(publisher.close)
    culler = Culler(settings, nc, registry, leases, publisher)
    losses = WorkerLossHandler(nc, registry, leases, publisher)

    async def outage_began() -> None:
        losses.tracker.outage()

    connectivity.on_disconnected.append(outage_began)
    gate = BusGate(connectivity, settle=subjects.WORKER_TTL)
    sink = activity.EventSink(culler.view.apply, losses.tracker.note_stopped)
    subscriptions = await activity.subscribe(js, event_registry(), sink)
    stack.push_async_callback(activity.unsubscribe, subscriptions)
    liveness = health.Liveness(max_age=3 * settings.worker_check_interval + 60)
    if settings.health_port:
        server = await health.serve(liveness, settings.health_ip, settings.health_port)
        stack.push_async_callback(_close_server, server)
    await culler.refresh()
    _announce(settings)
    return Parts(culler, losses, liveness, gate)


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def _announce(settings: CullerSettings) -> None:
    if settings.culling_enabled:
        log.info(
            "Culling kernels with idle durations > %s seconds at %s second intervals ...",
            settings.cull_idle_timeout,
            settings.cull_interval,
        )
        if settings.cull_busy:
            log.info("Culling kernels even if busy")
        if settings.cull_connected:
            log.info("Culling kernels even with connected clients")
    else:
        log.info("culling is disabled (cull_idle_timeout = 0); watching for lost workers only")
    log.info("culler %s ready", settings.culler_id)


@dataclass
class BusGate:
    """Judge nothing by the registry until the bus has been up, without a break, for
    `settle` seconds (a heartbeat TTL): heartbeats that aged out while NATS was down, and
    activity the workers could not write meanwhile, say nothing about workers or kernels.

    Worker loss is always gated (also at start: NATS may have just restarted); idle culling
    only after an outage (before, records are as fresh as the workers keep them).
    """

    connectivity: bus.Connectivity
    settle: float
    _was_open: bool = True

    def workers(self) -> bool:
        return self._report(self.connectivity.steady_for(self.settle))

    def culling(self) -> bool:
        if self.connectivity.outages == 0:
            return True
        return self._report(self.connectivity.steady_for(self.settle))

    def _report(self, open_: bool) -> bool:
        if open_ != self._was_open:
            if open_:
                log.info("bus steady for %.0f s: judging workers and kernels again", self.settle)
            else:
                log.warning("bus down or just back: not judging workers or kernels")
            self._was_open = open_
        return open_


async def _run_loops(settings: CullerSettings, parts: Parts, stop: asyncio.Event) -> None:
    async def worker_check() -> None:
        if parts.gate.workers():
            await parts.losses.check()
        parts.liveness.beat()

    async def culling_pass() -> None:
        if parts.gate.culling():
            await parts.culler.tick()

    async def worker_probe() -> None:
        if parts.gate.workers():
            await parts.losses.probe(settings.worker_disconnect_grace, PROBE_TIMEOUT)

    loops = [_every(settings.worker_check_interval, worker_check, stop, "worker check")]
    if settings.worker_disconnect_grace > 0:
        loops.append(_every(settings.worker_probe_interval, worker_probe, stop, "worker probe"))
    if settings.culling_enabled:
        loops.append(_every(settings.cull_interval, culling_pass, stop, "culling pass"))
    await asyncio.gather(*loops)


async def _every(
    interval: float, action: Callable[[], Awaitable[object]], stop: asyncio.Event, what: str
) -> None:
    """Run `action` every `interval` seconds until `stop`; a failure is logged, not fatal."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            await action()
        except Exception:
            log.exception("%s failed", what)
