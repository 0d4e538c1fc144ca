"""The events a worker emits about its kernels (jupyter_server's `kernel_actions`, and
Kernelbus's activity and death events). Emitting never fails a command."""

from __future__ import annotations

from typing import Any

from kernelbus import events
from kernelbus.eventpublisher import EventPublisher
from kernelbus.timefmt import jupyter_timestamp
from kernelbus_worker.kernel import ManagedKernel


class KernelNotices:
    def __init__(self, publisher: EventPublisher, worker_id: str) -> None:
        self.publisher = publisher
        self.worker_id = worker_id

    async def action(
        self, action: str, kernel: ManagedKernel, error: BaseException | None = None
    ) -> None:
        """`kernel_actions` exactly as jupyter_server words it (success, or error with msg)."""
        data = events.kernel_action(action, kernel.id, kernel.record.name, error)
        if error is not None:
            # Only automatic restarts fail here: the api reports the actions it was asked for.
            data["status_code"] = 500
        await self._emit(events.KERNEL_ACTIONS, data, kernel)

    async def activity(self, kernel: ManagedKernel) -> None:
        data = {
            "kernel_id": kernel.id,
            "kernel_name": kernel.record.name,
            "worker_id": self.worker_id,
            "execution_state": kernel.record.execution_state,
            "last_activity": jupyter_timestamp(kernel.record.last_activity),
            "connections": len(kernel.connections),
        }
        await self._emit(events.KERNEL_ACTIVITY, data, kernel)

    async def died(self, kernel: ManagedKernel, exit_code: int | None, will_restart: bool) -> None:
        data = {
            "kernel_id": kernel.id,
            "kernel_name": kernel.record.name,
            "worker_id": self.worker_id,
            "exit_code": exit_code,
            "will_restart": will_restart,
            "restarts": kernel.record.restarts,
        }
        await self._emit(events.KERNEL_DIED, data, kernel)

    async def _emit(self, schema_id: str, data: dict[str, Any], kernel: ManagedKernel) -> None:
        try:
            await self.publisher.emit(schema_id, data)
        except Exception:
            kernel.log.exception("could not emit %s", schema_id)
