"""Which kernels this worker runs, and the commands on them: start (idempotent, bounded by
capacity, from the warm pool when it can), interrupt, restart, shutdown, re-adoption."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Protocol

from kernelbus import bus
from kernelbus.bounded import UNANSWERED
from kernelbus.errors import CapacityExceeded, NoSuchKernel, RestartFailed
from kernelbus.eventpublisher import EventPublisher
from kernelbus.messages import StartKernel
from kernelbus.models import KernelRecord
from kernelbus.processes import orphaned_kernels, wait_gone
from kernelbus.registry import Registry
from kernelbus_worker import metrics
from kernelbus_worker.adoption import reattach, unadoptable
from kernelbus_worker.factory import KernelFactory, record_provisioner
from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.lifecycle import LifecycleError
from kernelbus_worker.notices import KernelNotices
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.pool import WarmStarts
from kernelbus_worker.records import KernelRecords
from kernelbus_worker.restarter import Restarter
from kernelbus_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

SIM_PROVISIONER = "kernelbus-sim-provisioner"
REAP_WAIT = 5.0
"""Seconds a successor waits for the leftovers it SIGKILLed to be gone."""
ADOPT_AT_ONCE = 32
"""Kernels a successor re-adopts concurrently (each opens its ZMQ sockets and probes)."""


class KernelObserver(Protocol):
    """Told when a kernel joins or leaves this worker (the bus handlers subscribe its
    subjects for as long as it lives here)."""

    async def kernel_added(self, kernel: ManagedKernel) -> None: ...

    async def kernel_removed(self, kernel: ManagedKernel) -> None: ...


class _Unobserved:
    async def kernel_added(self, kernel: ManagedKernel) -> None:
        return None

    async def kernel_removed(self, kernel: ManagedKernel) -> None:
        return None


class Supervisor:
    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        outbox: Outbox,
        publisher: EventPublisher,
        catalog: Catalog,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.catalog = catalog
        self.observer: KernelObserver = _Unobserved()
        """Set by the composition root once the handlers exist (they need the supervisor)."""
        self.kernels: dict[str, ManagedKernel] = {}
        self.removals = 0
        """Kernels removed so far (the worker gives their freed memory back after some)."""
        self._starting: dict[str, asyncio.Task[KernelRecord]] = {}
        self.load_changed = asyncio.Event()
        """Set when a start ends (either way): the next heartbeat goes out at once, so that
        placement does not see a finished or failed start as still running."""
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._keeper_syncs: set[asyncio.Task[None]] = set()
        self._keeper_told: dict[str, tuple[int | None, str | None, str]] = {}
        self._keeper_connection = 0
        self.factory = KernelFactory(settings, catalog, outbox)
        self.notices = KernelNotices(publisher, settings.id)
        self.records = KernelRecords(registry, settings.id, pending_dir=self.factory.runtime_dir())
        self.restarter = Restarter(settings, self.factory, self.records, self.notices)
        self.pool = WarmStarts(
            self.factory,
            settings.pool_sizes,
            room=lambda: settings.max_kernels - self.running - len(self.pool),
            busy=lambda: bool(self._starting),
        )

    @property
    def running(self) -> int:
        live = sum(1 for k in self.kernels.values() if k.record.execution_state != "dead")
        return live + len(self._starting)

    def get(self, kernel_id: str) -> ManagedKernel:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            raise NoSuchKernel(f"Kernel does not exist: {kernel_id}")
        return kernel

    # --- start ----------------------------------------------------------------------------

    async def start(self, command: StartKernel) -> KernelRecord:
        """Start `command.kernel_id`, or return it if it runs or is starting already."""
        if command.kernel_id in self.kernels:
            return self.kernels[command.kernel_id].record
        if command.kernel_id in self._starting:
            return await asyncio.shield(self._starting[command.kernel_id])
        self.catalog.spec(command.kernel_name)
        if self.running >= self.settings.max_kernels:
            raise CapacityExceeded("Resource Limit")
        task = asyncio.get_running_loop().create_task(self._start(command))
        self._starting[command.kernel_id] = task
        self.pool.starts_changed()
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(command.kernel_id, None)
            self.load_changed.set()
            self.pool.starts_changed()

    @metrics.measured_start
    async def _start(self, command: StartKernel) -> KernelRecord:
        kernel = await self.pool.claim(command)
        source = "the warm pool" if kernel else "a cold start"
        if kernel is None:
            kernel = self.factory.new(
                KernelRecord(
                    id=command.kernel_id,
                    name=command.kernel_name,
                    worker_id=self.settings.id,
                    username=command.username,
                    launch_env=command.env,
                    working_dir=command.working_dir,
                )
            )
            try:
                kernel = await self.factory.launch(kernel, command, command.launch_timeout)
            except Exception:
                # The api reports the failure (kernel_actions error with its HTTP status).
                self._starting.pop(command.kernel_id, None)
                raise
        self._starting.pop(command.kernel_id, None)
        try:
            await self._register(kernel)
        except BaseException:
            # Not in the registry (e.g. no JetStream leader for a moment): the client is told
            # the start failed, so the kernel must not linger unlisted, holding capacity.
            await self._unregister(kernel)
            raise
        await self.notices.action("start", kernel)
        kernel.log.info("kernel started from %s (%s)", source, command.kernel_name)
        return kernel.record

    async def _register(self, kernel: ManagedKernel) -> None:
        """Make a ready kernel reachable: registry entry, bus subscriptions, death watch."""
        await record_provisioner(kernel)
        self.kernels[kernel.id] = kernel
        kernel.registered()  # from here on a shutdown may come for it
        await self.observer.kernel_added(kernel)
        # Bounded: a stream electing its leader must not fail the start (ADR 0023); the
        # record stays unsaved and the activity flush writes it.
        await self.records.save_or_keep(kernel)
        # In the background: the first one may start the keeper, not to be waited for here.
        syncing = asyncio.get_running_loop().create_task(self.sync_keeper(flush=False))
        self._keeper_syncs.add(syncing)
        syncing.add_done_callback(self._keeper_syncs.discard)
        kid = kernel.id
        watch = self.restarter.watch(kernel, managed=lambda: self.kernels.get(kid) is kernel)
        self._watchers[kid] = asyncio.get_running_loop().create_task(watch)

    # --- iopub keeper (ADR 0014) ------------------------------------------------------------

    async def sync_keeper(self, flush: bool = True) -> None:
        """Tell the keeper which kernels to watch and, once NATS confirmed it has everything
        published so far (`flush`), the last iopub message delivered of each."""
        keeper = self.factory.keeper
        if keeper is None:
            return
        kernels = [k for k in self.kernels.values() if _watchable(k)]
        acked = {k.id: k.bridge.last_published for k in kernels}
        if flush:
            try:
                await bus.flush(self.factory.outbox.nc, timeout=2)
            except Exception:
                acked = {}  # not known to be delivered: the keeper keeps the previous ack
        if keeper.connections != self._keeper_connection:  # a new keeper: tell it everything
            self._keeper_connection = keeper.connections
            self._keeper_told.clear()
        entries = {}
        for k in kernels:  # only what changed since the keeper was last told
            told = (k.record.pid, acked.get(k.id), json.dumps(k.record.connection_info))
            if self._keeper_told.get(k.id) != told:
                entries[k.id] = {
                    "info": k.record.connection_info,
                    "pid": k.record.pid,
                    "acked": acked.get(k.id),
                }
                self._keeper_told[k.id] = told
        if not entries:
            return
        try:
            await keeper.sync(entries)
        except Exception as exc:
            self._keeper_told.clear()
            log.warning("iopub keeper: %s", exc, extra={"worker_id": self.settings.id})

    async def _keeper_forget(self, kernel_id: str) -> None:
        self._keeper_told.pop(kernel_id, None)
        if self.factory.keeper is None:
            return
        try:
            await self.factory.keeper.forget(kernel_id)
        except Exception as exc:
            log.warning("iopub keeper: %s", exc, extra={"worker_id": self.settings.id})

    async def stop_keeper(self) -> None:
        """This worker shut its kernels down: the keeper has nothing left to keep."""
        if self.factory.keeper is None:
            return
        try:
            await self.factory.keeper.stop()
        except Exception as exc:
            log.warning("iopub keeper: %s", exc, extra={"worker_id": self.settings.id})

    async def _unregister(self, kernel: ManagedKernel) -> None:
        watcher = self._watchers.pop(kernel.id, None)
        if watcher is not None:
            watcher.cancel()
        if self.kernels.get(kernel.id) is kernel:
            self.kernels.pop(kernel.id, None)
            kernel.connections.drop_frames()
            self.removals += 1
            with contextlib.suppress(Exception):
                await self.observer.kernel_removed(kernel)
        await self.factory.discard(kernel)

    async def refill_pool(self) -> None:
        await self.pool.refill()

    # --- adoption -------------------------------------------------------------------------

    async def adopt_orphans(self) -> None:
        """Take back kernels the registry says this worker id owns (after a crash), all at once:
        one at a time, busy kernels added up to a start that let the heartbeat age out."""
        # Records a crashed predecessor could not write (no stream leader) are newer than
        # the registry's (ADR 0023).
        kept = {r.id: r for r in self.records.kept()}
        deleted = self.records.kept_deletes()
        for kernel_id in deleted:
            self.records.note_delete(kernel_id)  # removed by the next flush
        listed = [r for r in await self.registry.list_kernels() if r.id not in kept]
        records = [
            r
            for r in listed + list(kept.values())
            if r.id not in deleted
            and r.worker_id == self.settings.id
            and r.id not in self.kernels
            and r.execution_state != "dead"
        ]
        limit = asyncio.Semaphore(ADOPT_AT_ONCE)

        async def adopt(record: KernelRecord) -> None:
            async with limit:
                await self._adopt(record)

        await asyncio.gather(*(adopt(r) for r in records))

    async def _adopt(self, record: KernelRecord) -> None:
        try:
            kernel = await reattach(
                self.factory, record, min(10.0, self.settings.kernel_info_timeout)
            )
        except Exception as exc:
            log.warning("could not re-adopt kernel %s: %s", record.id, exc)
            lost = self.factory.new(record)
            self.kernels[record.id] = lost
            await self.observer.kernel_added(lost)
            await self.restarter.declare_dead(lost, f"Kernel lost with its worker: {exc}")
            return
        await self._register(kernel)
        kernel.log.info("re-adopted kernel (pid %s)", record.pid)

    async def reap_leftovers(self) -> None:
        """Kill the kernels a previous worker left in this worker's own runtime dir that nobody
        will adopt (`unadoptable`), so repeated crashes do not pile up orphans. Only with an
        explicit KERNELBUS_WORKER_RUNTIME_DIR: Jupyter's default one is shared with others."""
        if not self.settings.runtime_dir:
            return
        directory = Path(self.settings.runtime_dir)
        leftovers = orphaned_kernels(directory)
        if not leftovers:
            return
        records = {r.id: r for r in await self.registry.list_kernels()}
        reaped = unadoptable(leftovers, records, self.settings.id, self.kernels)
        for kernel_id, pid in reaped.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            (directory / f"kernel-{kernel_id}.json").unlink(missing_ok=True)
            log.warning(
                "reaped kernel %s (pid %d) that a previous worker left and nobody adopts",
                kernel_id,
                pid,
                extra={"worker_id": self.settings.id},
            )
        # Gone before this worker says it is ready (SIGKILL takes effect asynchronously).
        if left := await asyncio.to_thread(wait_gone, list(reaped.values()), REAP_WAIT):
            log.warning("kernels still running %s s after SIGKILL: %s", REAP_WAIT, left)

    # --- commands -------------------------------------------------------------------------

    async def interrupt(self, kernel_id: str) -> KernelRecord:
        kernel = self.get(kernel_id)
        await kernel.km.interrupt_kernel()  # a failure is reported by the api
        await self.notices.action("interrupt", kernel)
        return kernel.record

    async def restart(self, kernel_id: str, timeout: float | None = None) -> KernelRecord:
        kernel = self.get(kernel_id)
        try:
            kernel.restart_began()
        except LifecycleError as exc:
            kernel.log.warning("restart refused: %s", exc)
            raise RestartFailed("Exception restarting kernel") from exc
        try:
            await self.factory.restart(kernel, now=False, timeout=timeout)
        except Exception as exc:  # reported by the api as a kernel_actions error
            kernel.log.warning("restart failed: %s: %s", type(exc).__name__, exc)
            raise RestartFailed("Exception restarting kernel") from exc
        finally:
            kernel.restart_ended()
        await self.restarter.persist(kernel)
        await self.notices.action("restart", kernel)
        return kernel.record

    async def shutdown(self, kernel_id: str, reason: str = "") -> KernelRecord:
        kernel = self.get(kernel_id)
        kernel.shutdown_began()
        watcher = self._watchers.pop(kernel_id, None)
        if watcher is not None:
            watcher.cancel()
        await self.factory.stop(kernel)
        await kernel.bridge.publish_status("dead")
        kernel.close_bridge()
        self.kernels.pop(kernel_id, None)
        kernel.connections.drop_frames()
        self.removals += 1
        await self._keeper_forget(kernel_id)
        await self.observer.kernel_removed(kernel)
        await self.records.delete(kernel_id)  # bounded; else pending for the flush
        await self.notices.action("shutdown", kernel)
        kernel.log.info("kernel shut down%s", f" ({reason})" if reason else "")
        kernel.record.execution_state = "dead"
        return kernel.record

    async def shutdown_all(self) -> None:
        await self.pool.drain()
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(
            *(self.shutdown(kid, "worker stopping") for kid in list(self.kernels)),
            return_exceptions=True,
        )

    # --- NATS outages ----------------------------------------------------------------------

    def bus_lost(self, last_seen: dict[str, float]) -> None:
        """Every kernel holds its output for its open connections (`ConnectionTable.bus_lost`);
        `last_seen` is when each api replica last answered a ping."""
        for kernel in self.kernels.values():
            kernel.connections.bus_lost(last_seen)

    def bus_back(self) -> None:
        for kernel in self.kernels.values():
            kernel.connections.bus_back()

    def expire_holds(self) -> None:
        for kernel in self.kernels.values():
            kernel.connections.expire_hold()

    # --- activity -------------------------------------------------------------------------

    async def flush_activity(self) -> None:
        """Remove the records of kernels shut down while JetStream did not answer, then write
        records whose activity changed (throttled by the caller's interval). A pass ends at
        the first write JetStream does not take (no stream leader): the next one retries."""
        try:
            await self.records.flush_pending()
            for kernel in list(self.kernels.values()):
                if await self.records.save_changed(kernel):
                    await self.notices.activity(kernel)
        except UNANSWERED as exc:
            log.info(
                "registry writes wait for JetStream (%s)",
                exc.message,
                extra={"worker_id": self.settings.id},
            )


def _watchable(kernel: ManagedKernel) -> bool:
    """A live kernel a successor could re-adopt (not a simulated one: its host process ends
    with the worker)."""
    provisioner = kernel.record.provisioner_info.get("provisioner_name")
    return (
        bool(kernel.record.connection_info)
        and kernel.record.execution_state != "dead"
        and provisioner != SIM_PROVISIONER
    )
