"""The one writer of this worker's kernel records to the registry, and so the one place that
clears a kernel's unsaved mark (`ManagedKernel.unsaved`): just before a write, set again if
the write fails, so a later activity flush writes it instead of forgetting it.

On a REST path (start, restart, shutdown) a write waits at most `bounded.BOUND` seconds: a
stream electing its leader (a NATS cluster lost a node) answers nothing for 4-9 s, and this
worker's memory is what is authoritative for its kernels anyway. A put that got no answer
stays marked unsaved; a delete that got none joins `pending_deletes`; the activity flush
(`flush_pending`, `save_changed`) writes both as soon as JetStream answers again (ADR 0023).
"""

from __future__ import annotations

import logging

from kernelbus.bounded import BOUND, UNANSWERED
from kernelbus.registry import Registry
from kernelbus_worker.kernel import ManagedKernel

log = logging.getLogger(__name__)


class KernelRecords:
    def __init__(self, registry: Registry, worker_id: str = "", bound: float = BOUND) -> None:
        self.registry = registry
        self.worker_id = worker_id
        self.bound = bound
        self.pending_deletes: set[str] = set()
        """Kernels shut down whose record removal JetStream has not confirmed yet."""

    async def save(self, kernel: ManagedKernel, bound: float | None = None) -> None:
        """Write the kernel's record now; raises what the registry raised (the record stays
        marked unsaved)."""
        self.pending_deletes.discard(kernel.id)  # started again under the same id
        kernel.take_unsaved()
        try:
            await self.registry.put_kernel(kernel.record, bound)
        except BaseException:
            kernel.record_changed()  # e.g. NATS down: written on a later pass, not forgotten
            raise

    async def save_or_keep(self, kernel: ManagedKernel) -> bool:
        """`save` within `bound`; when JetStream does not answer in time the record stays
        marked unsaved for the activity flush, and the caller goes on. True if written."""
        try:
            await self.save(kernel, self.bound)
        except UNANSWERED as exc:
            kernel.log.warning(
                "registry write pending (%s): the activity flush writes it", exc.message
            )
            return False
        return True

    async def delete(self, kernel_id: str) -> bool:
        """Remove the kernel's record within `bound`; else it is removed by `flush_pending`.
        True if removed now."""
        self.pending_deletes.discard(kernel_id)
        try:
            await self.registry.delete_kernel(kernel_id, self.bound)
        except UNANSWERED as exc:
            self.pending_deletes.add(kernel_id)
            log.warning(
                "registry delete pending (%s): the activity flush removes it",
                exc.message,
                extra={"kernel_id": kernel_id, "worker_id": self.worker_id},
            )
            return False
        return True

    async def flush_pending(self) -> None:
        """Remove the records of `pending_deletes`; raises at the first that fails (those
        left stay pending)."""
        for kernel_id in sorted(self.pending_deletes):
            await self.registry.delete_kernel(kernel_id)
            self.pending_deletes.discard(kernel_id)
            log.info(
                "pending registry delete done",
                extra={"kernel_id": kernel_id, "worker_id": self.worker_id},
            )

    async def save_changed(self, kernel: ManagedKernel) -> bool:
        """`save` if the record changed since it was last written and no restart or shutdown
        owns the kernel (their own writes come when they end). True if written."""
        if not kernel.unsaved or kernel.state.in_transition:
            return False
        await self.save(kernel)
        return True
