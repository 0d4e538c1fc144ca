"""One culling pass: refresh the view, decide for every kernel, and cull under a lease.

For each kernel the view says to cull: take the lease (`kb_cull`), re-read the registry record
and connection count, decide again on the fresh facts, then send `ShutdownKernel` to the
owning worker (which emits the `kernel_actions` shutdown event) and emit `kernel_culled`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernelbus import bus, events, subjects
from kernelbus.bus_types import Client
from kernelbus.errors import NoSuchKernel, NoWorkerAvailable
from kernelbus.messages import ShutdownKernel
from kernelbus.models import WorkerHeartbeat
from kernelbus.registry import Registry
from kernelbus.timefmt import utcnow
from kernelbus_culler.leases import Leases
from kernelbus_culler.policy import (
    CullPolicy,
    Decision,
    KernelSnapshot,
    cull_log_message,
    decide,
    metadata_timeouts,
    spec_timeouts,
)
from kernelbus_culler.settings import CullerSettings
from kernelbus_culler.view import KernelView, Listed, merge

log = logging.getLogger(__name__)


class Emitter(Protocol):
    async def emit(self, schema_id: str, data: dict[str, Any]) -> None: ...


@dataclass
class Culler:
    """The culling half of the service; `tick()` is one pass over every known kernel."""

    settings: CullerSettings
    nc: Client
    registry: Registry
    leases: Leases
    emitter: Emitter
    view: KernelView = field(default_factory=KernelView)
    live: list[WorkerHeartbeat] = field(default_factory=list)

    def policy(self) -> CullPolicy:
        timeouts = spec_timeouts(metadata_timeouts(self.live), self.settings.kernelspec_timeouts)
        return CullPolicy(
            idle_timeout=self.settings.cull_idle_timeout,
            cull_busy=self.settings.cull_busy,
            cull_connected=self.settings.cull_connected,
            spec_timeouts=timeouts,
        )

    async def refresh(self) -> None:
        """Rebuild the view from the registry (records, connection counts, live workers)."""
        records: list[Listed] = list(await self.registry.kernel_summaries())
        self.view.refresh(records, await self._connection_counts())
        self.live = await self.registry.live_workers()

    async def _connection_counts(self) -> dict[str, int] | None:
        try:
            return await self.registry.connection_counts()
        except Exception as exc:  # unknown counts spare connected kernels, never cull them
            log.warning("cannot read connection counts: %s", exc)
            return None

    async def tick(self) -> int:
        """One culling pass; returns how many kernels were culled."""
        await self.refresh()
        policy = self.policy()
        if not policy.enabled:
            return 0
        await self.leases.sweep(self.settings.lease_max_age)
        # Shutdowns take seconds each: a bounded number run at once, so a pass over many idle
        # kernels does not take minutes, nor flood the workers.
        slots = asyncio.Semaphore(self.settings.cull_concurrency)

        async def one(kernel_id: str) -> int:
            async with slots:
                return await self._consider_logged(kernel_id, policy)

        culled = sum(await asyncio.gather(*(one(k) for k in self.view.kernel_ids())))
        log.debug("culling pass done: %d kernels, %d culled", len(self.view.records), culled)
        return culled

    async def _consider_logged(self, kernel_id: str, policy: CullPolicy) -> int:
        """An exception on one kernel is logged and does not stop the pass."""
        try:
            return await self.consider(kernel_id, policy)
        except Exception:
            log.exception("culling kernel %s failed", kernel_id, extra={"kernel_id": kernel_id})
            return 0

    async def consider(self, kernel_id: str, policy: CullPolicy) -> int:
        """Cull one kernel if both the view and a fresh registry read say so."""
        first = decide(policy, self.view.snapshot(kernel_id), utcnow())
        if not first.cull:
            log.debug("kernel %s kept: %s", kernel_id, first.why, extra={"kernel_id": kernel_id})
            return 0
        if not await self.leases.take(kernel_id):
            log.debug("kernel %s is being culled by another culler", kernel_id)
            return 0
        try:
            fresh = await self._fresh_snapshot(kernel_id)
        except Exception:
            await self.leases.release(kernel_id)
            raise
        decision = decide(policy, fresh, utcnow())
        if fresh is None or not decision.cull:
            log.debug("kernel %s kept on a fresh read: %s", kernel_id, decision.why)
            await self.leases.release(kernel_id)
            return 0
        return await self._cull(fresh, decision)

    async def _fresh_snapshot(self, kernel_id: str) -> KernelSnapshot | None:
        entry = await self.registry.get_kernel_entry(kernel_id)
        if entry is None:
            return None
        try:
            connections: int | None = await self.registry.connections_of(kernel_id)
        except Exception as exc:
            log.warning("cannot read connections of %s: %s", kernel_id, exc)
            connections = None
        return merge(entry[0], self.view.activity.get(kernel_id), connections)

    async def _cull(self, kernel: KernelSnapshot, decision: Decision) -> int:
        log.warning(cull_log_message(kernel, decision), extra={"kernel_id": kernel.kernel_id})
        if not await self._shutdown(kernel):
            return 0
        await self.emitter.emit(
            events.KERNEL_CULLED, _culled_event(kernel, decision, self.settings.culler_id)
        )
        return 1

    async def _shutdown(self, kernel: KernelSnapshot) -> bool:
        """Ask the owning worker; False when the kernel was already gone."""
        command = ShutdownKernel(kernel_id=kernel.kernel_id, reason="culled")
        subject = subjects.kernel_command(kernel.kernel_id)
        try:
            await bus.request(self.nc, subject, command, timeout=self.settings.command_timeout)
        except NoSuchKernel:
            log.info("kernel %s was already gone", kernel.kernel_id)
            return False
        except NoWorkerAvailable:
            return await self._forget_orphan(kernel)
        return True

    async def _forget_orphan(self, kernel: KernelSnapshot) -> bool:
        """No worker answers for a kernel: if its owner is not alive, nobody else will ever
        remove the record, so the culler does (and emits the shutdown action itself)."""
        record = await self.registry.get_kernel(kernel.kernel_id)
        if record is None:
            return False
        if any(w.worker_id == record.worker_id for w in self.live):
            raise NoWorkerAvailable(f"worker {record.worker_id} did not answer")
        await self.registry.delete_kernel(kernel.kernel_id)
        await self.emitter.emit(
            events.KERNEL_ACTIONS, events.kernel_action("shutdown", kernel.kernel_id, kernel.name)
        )
        return True


def _culled_event(kernel: KernelSnapshot, decision: Decision, culler_id: str) -> dict[str, Any]:
    return {
        "kernel_id": kernel.kernel_id,
        "kernel_name": kernel.name,
        "execution_state": kernel.execution_state,
        "connections": kernel.connections or 0,
        "idle_seconds": round(decision.idle_seconds, 3),
        "reason": decision.why,
        "culler_id": culler_id,
    }
