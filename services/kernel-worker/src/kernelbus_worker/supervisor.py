"""Kernel lifecycle on this worker: start (idempotent, bounded by capacity and launch
timeout), interrupt, restart, shutdown, noticing deaths and restarting automatically."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from kernelbus import events
from kernelbus.errors import (
    CapacityExceeded,
    LaunchFailed,
    LaunchTimeout,
    NoSuchKernel,
    RestartFailed,
)
from kernelbus.events import EventPublisher
from kernelbus.messages import StartKernel
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus.timefmt import jupyter_timestamp
from kernelbus_worker import metrics
from kernelbus_worker.adoption import restore_manager
from kernelbus_worker.environment import build_kernel_env
from kernelbus_worker.kernel import ManagedKernel, plain
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.pool import WarmPool, claim_code, parse_pool_sizes
from kernelbus_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

KernelHook = Callable[[ManagedKernel], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        settings: WorkerSettings,
        registry: Registry,
        outbox: Outbox,
        publisher: EventPublisher,
        catalog: Catalog,
        on_added: KernelHook,
        on_removed: KernelHook,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.outbox = outbox
        self.publisher = publisher
        self.catalog = catalog
        self.on_added = on_added
        self.on_removed = on_removed
        self.kernels: dict[str, ManagedKernel] = {}
        self._starting: dict[str, asyncio.Task[KernelRecord]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._context = zmq.asyncio.Context()
        self.pool = WarmPool(parse_pool_sizes(settings.pool), self._launch_pooled, self._discard)
        self._filling = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

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
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(command.kernel_id, None)

    @metrics.measured_start
    async def _start(self, command: StartKernel) -> KernelRecord:
        warm = await self._claim_pooled(command)
        if warm is not None:
            self._starting.pop(command.kernel_id, None)
            await self._adopt(warm)
            await self._emit_action("start", warm)
            warm.log.info("kernel started from the warm pool (%s)", command.kernel_name)
            return warm.record
        kernel = self._prepare(command)
        try:
            async with asyncio.timeout(command.launch_timeout):
                await kernel.km.start_kernel(**self._launch_kwargs(command, kernel))
                kernel.open_bridge()
                await kernel.wait_ready(command.launch_timeout)
        except BaseException as exc:
            await self._discard(kernel)
            error = _launch_error(command, exc)
            await self._emit_action("start", kernel, error=error)
            raise error from exc
        finally:
            self._starting.pop(command.kernel_id, None)
        await self._adopt(kernel)
        await self._emit_action("start", kernel)
        kernel.log.info("kernel started (%s)", command.kernel_name)
        return kernel.record

    def _prepare(self, command: StartKernel) -> ManagedKernel:
        record = KernelRecord(
            id=command.kernel_id,
            name=command.kernel_name,
            worker_id=self.settings.id,
            username=command.username,
        )
        return self._new_kernel(record)

    def _new_kernel(self, record: KernelRecord) -> ManagedKernel:
        spec = copy.copy(self.catalog.spec(record.name))
        km = AsyncKernelManager(
            kernel_name=record.name,
            kernel_spec_manager=self.catalog.manager,
            shutdown_wait_time=self.settings.shutdown_wait,
            connection_file=str(self._runtime_dir() / f"kernel-{record.id}.json"),
        )
        km.kernel_id = record.id
        spec_env = dict(spec.env or {})
        spec.env = {}
        km._kernel_spec = spec  # env is built here, in PROTOCOLS order, not by the provisioner
        kernel = ManagedKernel(record, km, self.settings, self.outbox, self._context)
        kernel.spec_env = spec_env
        return kernel

    # --- warm pool ------------------------------------------------------------------------

    async def refill_pool(self) -> None:
        """Top the warm pool up while capacity is left (one filler at a time)."""
        if not self.pool.sizes or self._filling.locked():
            return
        async with self._filling:
            await self.pool.fill(lambda: self.settings.max_kernels - self.running - len(self.pool))

    async def _launch_pooled(self, name: str) -> ManagedKernel:
        record = KernelRecord(id=str(uuid.uuid4()), name=name, worker_id=self.settings.id)
        kernel = self._new_kernel(record)
        command = StartKernel(kernel_id=record.id, kernel_name=name)
        try:
            async with asyncio.timeout(self.settings.kernel_info_timeout):
                await kernel.km.start_kernel(**self._launch_kwargs(command, kernel))
                kernel.open_bridge()
                await kernel.wait_ready(self.settings.kernel_info_timeout)
        except BaseException:
            await self._discard(kernel)
            raise
        return kernel

    async def _claim_pooled(self, command: StartKernel) -> ManagedKernel | None:
        """A pooled kernel given the identity, environment and cwd `command` asks for."""
        kernel = self.pool.take(command.kernel_name)
        if kernel is None:
            return None
        refill = asyncio.get_running_loop().create_task(self.refill_pool())
        self._background.add(refill)
        refill.add_done_callback(self._background.discard)
        language = (kernel.km.kernel_spec.language if kernel.km.kernel_spec else "") or ""
        env = build_kernel_env({}, {}, [], command.env, command.kernel_id, language)
        kernel.relabel(
            KernelRecord(
                id=command.kernel_id,
                name=command.kernel_name,
                worker_id=self.settings.id,
                username=command.username,
                connection_info=kernel.record.connection_info,
            )
        )
        try:
            if not await kernel.km.is_alive():
                raise RuntimeError("pooled kernel died")
            code = claim_code(env, self._working_dir(command, kernel))
            await kernel.run_silently(code, min(10.0, command.launch_timeout))
        except Exception as exc:
            kernel.log.warning("pooled kernel unusable (%s); starting cold", exc)
            await self._discard(kernel)
            return None
        return kernel

    # --- adoption -------------------------------------------------------------------------

    async def adopt_orphans(self) -> None:
        """Take back kernels the registry says this worker id owns (after a crash)."""
        for record in await self.registry.list_kernels():
            if record.worker_id != self.settings.id or record.id in self.kernels:
                continue
            if record.execution_state == "dead":
                continue
            try:
                await self._adopt_orphan(record)
            except Exception as exc:
                log.warning("could not re-adopt kernel %s: %s", record.id, exc)
                kernel = self._new_kernel(record)
                self.kernels[record.id] = kernel
                await self.on_added(kernel)
                await self._declare_dead(kernel, f"Kernel lost with its worker: {exc}")

    async def _adopt_orphan(self, record: KernelRecord) -> None:
        kernel = self._new_kernel(record)
        await restore_manager(kernel.km, record)
        if not await kernel.km.is_alive():
            raise RuntimeError("the kernel process is gone")
        kernel.open_bridge()
        try:
            await kernel.wait_ready(min(10.0, self.settings.kernel_info_timeout))
        except BaseException:
            kernel.close_bridge()
            raise
        kernel.record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]
        await self._adopt(kernel)
        kernel.log.info("re-adopted kernel (pid %s)", record.pid)

    def _launch_kwargs(self, command: StartKernel, kernel: ManagedKernel) -> dict[str, Any]:
        spec = kernel.km.kernel_spec
        env = build_kernel_env(
            kernel.spec_env,
            os.environ,
            self.settings.inherited_names,
            command.env,
            command.kernel_id,
            (spec.language if spec else "") or "",
        )
        kwargs: dict[str, Any] = {"env": env, "independent": self.settings.independent_kernels}
        cwd = self._working_dir(command, kernel)
        if cwd:
            kwargs["cwd"] = cwd
        return kwargs

    def _working_dir(self, command: StartKernel, kernel: ManagedKernel) -> str | None:
        wanted = command.working_dir
        if not wanted or not self.settings.use_kernel_working_dir:
            return None
        if os.path.isdir(wanted):
            return wanted
        kernel.log.warning("KERNEL_WORKING_DIR %r does not exist on this worker; ignored", wanted)
        return None

    def _runtime_dir(self) -> Path:
        if self.settings.runtime_dir:
            path = Path(self.settings.runtime_dir)
        else:
            from jupyter_core.paths import jupyter_runtime_dir

            path = Path(jupyter_runtime_dir())
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _adopt(self, kernel: ManagedKernel) -> None:
        """Make a ready kernel reachable: registry entry, bus subscriptions, death watch."""
        record = kernel.record
        record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]
        await _record_provisioner(kernel)
        self.kernels[record.id] = kernel
        await self.on_added(kernel)
        await self.registry.put_kernel(record)
        kernel.dirty = False
        self._watchers[record.id] = asyncio.get_running_loop().create_task(self._watch(kernel))

    async def _discard(self, kernel: ManagedKernel) -> None:
        kernel.close_bridge()
        with contextlib.suppress(Exception):
            await kernel.km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            kernel.km.cleanup_resources()

    # --- commands -------------------------------------------------------------------------

    async def interrupt(self, kernel_id: str) -> KernelRecord:
        kernel = self.get(kernel_id)
        try:
            await kernel.km.interrupt_kernel()
        except Exception as exc:
            await self._emit_action("interrupt", kernel, error=exc)
            raise
        await self._emit_action("interrupt", kernel)
        return kernel.record

    async def restart(self, kernel_id: str) -> KernelRecord:
        kernel = self.get(kernel_id)
        kernel.busy_with_lifecycle = True
        try:
            await self._restart(kernel, now=False)
        except Exception as exc:
            await self._emit_action("restart", kernel, error=exc)
            raise RestartFailed("Exception restarting kernel") from exc
        finally:
            kernel.busy_with_lifecycle = False
        await self._emit_action("restart", kernel)
        return kernel.record

    async def _restart(self, kernel: ManagedKernel, now: bool) -> None:
        before = kernel.record.connection_info
        await kernel.km.restart_kernel(now=now)
        if plain(kernel.km.get_connection_info()) != before or kernel.sockets is None:
            kernel.open_bridge()
        kernel.activity.execution_state = "starting"
        kernel.record.execution_state = "starting"
        await kernel.wait_ready(self.settings.kernel_info_timeout)
        kernel.record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]
        kernel.record.reason = ""
        await _record_provisioner(kernel)
        kernel.dirty = True

    async def shutdown(self, kernel_id: str, reason: str = "") -> KernelRecord:
        kernel = self.get(kernel_id)
        kernel.busy_with_lifecycle = True
        watcher = self._watchers.pop(kernel_id, None)
        if watcher is not None:
            watcher.cancel()
        await self._stop_process(kernel)
        await kernel.publish_status("dead")
        kernel.close_bridge()
        self.kernels.pop(kernel_id, None)
        await self.on_removed(kernel)
        await self.registry.delete_kernel(kernel_id)
        await self._emit_action("shutdown", kernel)
        kernel.log.info("kernel shut down%s", f" ({reason})" if reason else "")
        kernel.record.execution_state = "dead"
        return kernel.record

    async def _stop_process(self, kernel: ManagedKernel) -> None:
        """Ask the kernel to exit; kill it if it does not. A dead kernel is only cleaned up."""
        if kernel.record.execution_state == "dead" or kernel.km.provisioner is None:
            with contextlib.suppress(Exception):
                kernel.km.cleanup_resources()
            return
        try:
            await asyncio.wait_for(
                kernel.km.shutdown_kernel(now=False), self.settings.shutdown_wait + 5
            )
        except Exception:
            with contextlib.suppress(Exception):
                await kernel.km.shutdown_kernel(now=True)

    async def shutdown_all(self) -> None:
        await self.pool.drain()
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(
            *(self.shutdown(kid, "worker stopping") for kid in list(self.kernels)),
            return_exceptions=True,
        )

    # --- deaths ---------------------------------------------------------------------------

    async def _watch(self, kernel: ManagedKernel) -> None:
        """Poll the kernel process; on an unexpected exit restart it or declare it dead."""
        while kernel.id in self.kernels:
            await asyncio.sleep(self.settings.poll_interval)
            if kernel.busy_with_lifecycle or kernel.record.execution_state == "dead":
                continue
            try:
                alive = await kernel.km.is_alive()
            except Exception:
                alive = False
            if not alive:
                await self._on_death(kernel)

    async def _on_death(self, kernel: ManagedKernel) -> None:
        exit_code = await _exit_code(kernel)
        restart = self.settings.autorestart and kernel.record.restarts < self.settings.restart_limit
        kernel.log.warning(
            "kernel died (exit code %s); %s", exit_code, "restarting" if restart else "dead"
        )
        await self.publisher.emit(
            events.KERNEL_DIED,
            {
                "kernel_id": kernel.id,
                "kernel_name": kernel.record.name,
                "worker_id": self.settings.id,
                "exit_code": exit_code,
                "will_restart": restart,
                "restarts": kernel.record.restarts,
            },
        )
        if restart:
            await self._auto_restart(kernel)
        else:
            await self._declare_dead(kernel, f"Kernel died (exit code {exit_code})")

    async def _auto_restart(self, kernel: ManagedKernel) -> None:
        kernel.busy_with_lifecycle = True
        kernel.record.execution_state = "restarting"
        kernel.record.restarts += 1
        await kernel.publish_status("restarting")
        await self.registry.put_kernel(kernel.record)
        try:
            await self._restart(kernel, now=True)
        except Exception as exc:
            kernel.log.exception("automatic restart failed")
            await self._emit_action("restart", kernel, error=exc)
            await self._declare_dead(kernel, f"Kernel restart failed: {exc}")
            return
        finally:
            kernel.busy_with_lifecycle = False
        await self._emit_action("restart", kernel)

    async def _declare_dead(self, kernel: ManagedKernel, reason: str) -> None:
        kernel.record.execution_state = "dead"
        kernel.record.reason = reason
        await kernel.publish_status("dead")
        kernel.close_bridge()
        await self.registry.put_kernel(kernel.record)
        kernel.dirty = False

    # --- registry and events --------------------------------------------------------------

    async def flush_activity(self) -> None:
        """Write records whose activity changed (throttled by the caller's interval)."""
        for kernel in list(self.kernels.values()):
            if not kernel.dirty or kernel.busy_with_lifecycle:
                continue
            kernel.dirty = False
            await self.registry.put_kernel(kernel.record)
            await self.publisher.emit(
                events.KERNEL_ACTIVITY,
                {
                    "kernel_id": kernel.id,
                    "kernel_name": kernel.record.name,
                    "worker_id": self.settings.id,
                    "execution_state": kernel.record.execution_state,
                    "last_activity": jupyter_timestamp(kernel.record.last_activity),
                    "connections": len(kernel.connections),
                },
            )

    async def _emit_action(
        self, action: str, kernel: ManagedKernel, error: BaseException | None = None
    ) -> None:
        data: dict[str, Any] = {
            "action": action,
            "kernel_id": kernel.id,
            "kernel_name": kernel.record.name,
        }
        if error is None:
            past = {
                "start": "started",
                "interrupt": "interrupted",
                "restart": "restarted",
                "shutdown": "shutdown",
            }
            data.update(status="success", msg=f"Kernel {kernel.id} was {past[action]}.")
        else:
            data.update(status="error", msg=str(error) or type(error).__name__)
        try:
            await self.publisher.emit(events.KERNEL_ACTIONS, data)
        except Exception:
            kernel.log.exception("could not emit the %s event", action)


def _launch_error(command: StartKernel, exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError | asyncio.CancelledError):
        return LaunchTimeout(
            f"Kernel {command.kernel_id} did not start within {command.launch_timeout:.0f} s"
        )
    return LaunchFailed(f"Kernel {command.kernel_id} failed to start: {exc}")


async def _record_provisioner(kernel: ManagedKernel) -> None:
    """Keep what a successor needs to find the kernel again (`get_provisioner_info`)."""
    provisioner = kernel.km.provisioner
    if provisioner is None:
        return
    info = plain(await provisioner.get_provisioner_info())
    stanza = (kernel.km.kernel_spec.metadata if kernel.km.kernel_spec else {}).get(
        "kernel_provisioner", {}
    )
    info["provisioner_name"] = stanza.get("provisioner_name", "local-provisioner")
    info["provisioner_class"] = f"{type(provisioner).__module__}.{type(provisioner).__qualname__}"
    kernel.record.provisioner_info = info
    kernel.record.pid = info.get("pid")


async def _exit_code(kernel: ManagedKernel) -> int | None:
    provisioner = kernel.km.provisioner
    if provisioner is None:
        return None
    with contextlib.suppress(Exception):
        code = await provisioner.poll()
        return int(code) if code is not None else None
    return None
