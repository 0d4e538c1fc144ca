"""Noticing kernels that die on their own: restart them (up to a limit), else declare them
dead, telling clients with the statuses jupyter_server sends (`restarting`, `dead`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kernelbus_worker.factory import KernelFactory, exit_code
from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.lifecycle import Lifecycle
from kernelbus_worker.notices import KernelNotices
from kernelbus_worker.records import KernelRecords
from kernelbus_worker.settings import WorkerSettings


class Restarter:
    def __init__(
        self,
        settings: WorkerSettings,
        factory: KernelFactory,
        records: KernelRecords,
        notices: KernelNotices,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.records = records
        self.notices = notices

    async def watch(self, kernel: ManagedKernel, managed: Callable[[], bool]) -> None:
        """Poll the process while `managed()`; act on an exit nobody asked for."""
        while managed():
            await asyncio.sleep(self.settings.poll_interval)
            if kernel.state is not Lifecycle.RUNNING:
                continue  # a restart or shutdown owns it, or it is dead
            try:
                alive = await kernel.km.is_alive()
            except Exception:
                alive = False
            try:
                if not alive and managed():
                    await self._on_death(kernel)
                elif alive:
                    self._note_stable(kernel)
            except Exception:
                # Never end the watch (nothing would restart the kernel or reset its count
                # again, and a task kept in the supervisor's table dies without a trace).
                kernel.log.exception("handling the kernel's exit failed; still watching it")

    def _note_stable(self, kernel: ManagedKernel) -> None:
        """As jupyter_client's restarter: a kernel that stayed up `stable_start_time` seconds
        after its last automatic restart (counted from when it was ready again) starts its
        count of automatic restarts again from zero."""
        if kernel.consecutive_restarts == 0:
            return
        if time.monotonic() - kernel.up_since >= self.settings.stable_start_time:
            kernel.log.info(
                "kernel stable for %.0f s after %d automatic restarts; restart count reset",
                self.settings.stable_start_time,
                kernel.consecutive_restarts,
            )
            kernel.consecutive_restarts = 0

    async def _on_death(self, kernel: ManagedKernel) -> None:
        kernel.bridge.hold_client_frames()  # not into the dead kernel's sockets
        code = await exit_code(kernel)
        restart = (
            self.settings.autorestart and kernel.consecutive_restarts < self.settings.restart_limit
        )
        kernel.log.warning(
            "kernel died (exit code %s); %s", code, "restarting" if restart else "dead"
        )
        # What the kernel printed before it died reaches clients before `restarting`/`dead`.
        await kernel.bridge.drain_iopub()
        await self.notices.died(kernel, code, restart)
        if restart:
            await self._auto_restart(kernel)
        else:
            await kernel.bridge.release_client_frames(deliver=False)
            await self.declare_dead(kernel, f"Kernel died (exit code {code})")

    async def _auto_restart(self, kernel: ManagedKernel) -> None:
        kernel.restart_began()
        kernel.record.execution_state = "restarting"
        kernel.record.restarts += 1
        kernel.consecutive_restarts += 1
        await kernel.bridge.publish_status("restarting")
        await self.write_record(kernel)
        try:
            await self.factory.restart(kernel, now=True)
        except Exception as exc:
            kernel.log.exception("automatic restart failed")
            await self.notices.action("restart", kernel, error=exc)
            await self.declare_dead(kernel, f"Kernel restart failed: {exc}")
            return
        finally:
            kernel.restart_ended()
        kernel.up_since = time.monotonic()
        await self.write_record(kernel)
        await self.notices.action("restart", kernel)

    async def persist(self, kernel: ManagedKernel) -> None:
        """Write a restarted kernel's record at once: its new pid is what a successor needs
        to re-adopt it, and a crash may come before the next activity flush. Bounded: without
        a stream leader the record stays unsaved for the flush (ADR 0023)."""
        await self.records.save_or_keep(kernel)

    async def write_record(self, kernel: ManagedKernel) -> None:
        """`persist`, for the watch: a write that fails (a JetStream timeout on a loaded
        machine, a NATS outage) is logged and left to the next activity flush (the record
        stays dirty) instead of ending the watch of the kernel."""
        try:
            await self.persist(kernel)
        except Exception as exc:
            kernel.log.warning(
                "could not write the kernel's record (%s: %s); the next flush writes it",
                type(exc).__name__,
                exc,
            )

    async def declare_dead(self, kernel: ManagedKernel, reason: str) -> None:
        """Record `dead` with a reason (REST shows it; the culler removes it) and tell clients."""
        kernel.declared_dead(reason)
        await kernel.bridge.publish_status("dead")
        kernel.close_bridge()
        await self.write_record(kernel)
