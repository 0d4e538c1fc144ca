"""The one writer of this worker's kernel records to the registry, and so the one place that
clears a kernel's unsaved mark (`ManagedKernel.unsaved`): just before a write, set again if
the write fails, so a later activity flush writes it instead of forgetting it."""

from __future__ import annotations

from kernelbus.registry import Registry
from kernelbus_worker.kernel import ManagedKernel


class KernelRecords:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def save(self, kernel: ManagedKernel) -> None:
        """Write the kernel's record now; raises what the registry raised (the record stays
        marked unsaved)."""
        kernel.take_unsaved()
        try:
            await self.registry.put_kernel(kernel.record)
        except BaseException:
            kernel.record_changed()  # e.g. NATS down: written on a later pass, not forgotten
            raise

    async def save_changed(self, kernel: ManagedKernel) -> bool:
        """`save` if the record changed since it was last written and no restart or shutdown
        owns the kernel (their own writes come when they end). True if written."""
        if not kernel.unsaved or kernel.state.in_transition:
            return False
        await self.save(kernel)
        return True
