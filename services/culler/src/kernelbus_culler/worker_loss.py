"""Acting on a lost worker: emit `worker_lost` once (lease-guarded across culler replicas),
mark its kernels `dead` in the registry with compare-and-set and publish a `dead` iopub status
for each (what the worker would have sent), so REST and websocket clients see the loss; the
next culling pass shuts them down (and removes their records) when culling is on."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from kernelbus import bus, events, subjects
from kernelbus.bus_types import Client
from kernelbus.framing import message_frame
from kernelbus.registry import Registry
from kernelbus.registryview import KernelSummary
from kernelbus_culler.culling import Emitter
from kernelbus_culler.leases import Leases
from kernelbus_culler.workers import LostWorker, WorkerTracker

log = logging.getLogger(__name__)


@dataclass
class WorkerLossHandler:
    nc: Client
    registry: Registry
    leases: Leases
    emitter: Emitter
    tracker: WorkerTracker = field(default_factory=WorkerTracker)
    reported: set[str] = field(default_factory=set)

    async def check(self) -> list[str]:
        """One look for lost workers; returns the ids handled."""
        records = await self.registry.kernel_summaries()
        owners = {r.worker_id for r in records if r.execution_state != "dead"}
        live = await self.registry.live_workers()
        lost = self.tracker.check(live, owners, time.monotonic())
        for worker in lost:
            await self.handle(worker, [r for r in records if r.worker_id == worker.worker_id])
            self.tracker.forget(worker.worker_id)
        return [w.worker_id for w in lost]

    async def probe(self, grace: float, timeout: float) -> list[str]:
        """Probe every candidate's liveness subject once; handle those without a responder
        for `grace` seconds (ADR 0016). Returns the ids handled."""
        candidates = self.tracker.candidates()
        answers = await asyncio.gather(
            *(
                bus.ping(self.nc, subjects.worker_ping(w), timeout, on_timeout=True)
                for w in candidates
            )
        )
        now = time.monotonic()
        for worker_id, answer in zip(candidates, answers, strict=True):
            self.tracker.probed(worker_id, answer, now)
        lost = self.tracker.disconnected(grace, now)
        if not lost:
            return []
        records = await self.registry.kernel_summaries()
        why = f"no connection left for {grace:g} s"
        for worker in lost:
            await self.handle(worker, [r for r in records if r.worker_id == worker.worker_id], why)
            self.tracker.forget(worker.worker_id)
        return [w.worker_id for w in lost]

    async def handle(
        self,
        worker: LostWorker,
        records: list[KernelSummary],
        why: str = "heartbeat expired without a clean stop",
    ) -> None:
        alive = [r for r in records if r.execution_state != "dead"]
        log.warning(
            "worker %s lost (%s); %d kernels affected",
            worker.worker_id,
            why,
            len(alive),
            extra={"worker_id": worker.worker_id},
        )
        await self._report(worker, [r.id for r in alive])
        for record in alive:
            if await mark_dead(self.registry, record.id, worker.worker_id):
                await self.nc.publish(subjects.kernel_iopub(record.id), dead_status_frame())

    async def _report(self, worker: LostWorker, kernel_ids: list[str]) -> None:
        if worker.worker_id in self.reported:
            return
        self.reported.add(worker.worker_id)
        if not await self.leases.take(f"lost-{worker.worker_id}"):
            return
        heartbeat = worker.last_heartbeat
        await self.emitter.emit(
            events.WORKER_LOST,
            {
                "worker_id": worker.worker_id,
                "hostname": heartbeat.hostname if heartbeat else "",
                "max_kernels": heartbeat.max_kernels if heartbeat else 0,
                "kernel_ids": kernel_ids,
            },
        )


async def mark_dead(registry: Registry, kernel_id: str, worker_id: str) -> bool:
    """Set `dead` with reason `worker <id> lost`, unless the record changed owner or state."""
    entry = await registry.get_kernel_entry(kernel_id)
    if entry is None:
        return False
    record, revision = entry
    if record.worker_id != worker_id or record.execution_state == "dead":
        return False
    dead = record.model_copy(
        update={"execution_state": "dead", "reason": f"worker {worker_id} lost"}
    )
    if not await registry.replace_kernel(dead, revision):
        log.info("kernel %s changed while marking it dead; left as is", kernel_id)
        return False
    return True


def dead_status_frame() -> bytes:
    """An iopub `status: dead` frame with an empty parent_header, as a worker generates it."""
    return message_frame("iopub", "status", {"execution_state": "dead"}, session="kernelbus-culler")
