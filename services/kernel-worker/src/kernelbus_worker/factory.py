"""Kernel processes: building a `ManagedKernel`, launching it until ready, restarting,
stopping and discarding it. No bookkeeping of which kernels exist (that is the supervisor's)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from pathlib import Path
from typing import Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from kernelbus.errors import LaunchFailed, LaunchTimeout
from kernelbus.messages import StartKernel
from kernelbus.models import KernelRecord
from kernelbus_worker.environment import build_kernel_env
from kernelbus_worker.keeperclient import KeeperClient
from kernelbus_worker.kernel import KernelExited, ManagedKernel, plain
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.settings import WorkerSettings

IPC_PATH_MAX = 107
"""Longest Unix socket path (sun_path) Linux accepts."""


class KernelFactory:
    def __init__(self, settings: WorkerSettings, catalog: Catalog, outbox: Outbox) -> None:
        self.settings = settings
        self.catalog = catalog
        self.outbox = outbox
        self.context = zmq.asyncio.Context()
        # Four sockets per kernel: the default ceiling (1023) would stop a worker at ~250.
        self.context.set(zmq.MAX_SOCKETS, 100_000)
        self.keeper: KeeperClient | None = None
        if settings.iopub_keeper and settings.runtime_dir:
            self.keeper = KeeperClient(
                self._runtime_dir(),
                settings.iopub_keeper_window,
                settings.id,
                malloc_keep_bytes=settings.malloc_keep_bytes,
            )
        if settings.kernel_transport == "ipc":
            longest = self._runtime_dir() / f"kernel-{'x' * 36}-ipc-99999"
            if len(str(longest)) > IPC_PATH_MAX:
                raise ValueError(
                    f"KERNELBUS_WORKER_RUNTIME_DIR {self._runtime_dir()} is too long for ipc "
                    f"sockets (paths of at most {IPC_PATH_MAX} bytes): choose a shorter one"
                )

    def new(self, record: KernelRecord) -> ManagedKernel:
        """A kernel object for `record`, its manager set up but no process started."""
        spec = copy.copy(self.catalog.spec(record.name))
        km = AsyncKernelManager(
            kernel_name=record.name,
            kernel_spec_manager=self.catalog.manager,
            shutdown_wait_time=self.settings.shutdown_wait,
            connection_file=str(self._runtime_dir() / f"kernel-{record.id}.json"),
            # ipc: sockets `<runtime dir>/kernel-<id>-ipc-<n>` (jupyter_client's naming).
            transport=self.settings.kernel_transport,
        )
        km.kernel_id = record.id
        spec_env = dict(spec.env or {})
        spec.env = {}
        km._kernel_spec = spec  # env is built here, in PROTOCOLS order, not by the provisioner
        kernel = ManagedKernel(record, km, self.settings, self.outbox, self.context)
        kernel.spec_env = spec_env
        return kernel

    async def launch(
        self, kernel: ManagedKernel, command: StartKernel, timeout: float
    ) -> ManagedKernel:
        """Start the process and wait until it is ready; on any failure nothing is left.

        A process that exits during start is started once more, as a new kernel with fresh
        ports (the one returned), within the same `timeout`: jupyter_client picks free ports
        by binding and releasing them, so another process on the host can take one before the
        kernel binds it, and the kernel then exits. A kernel that cannot start fails twice."""
        deadline = time.monotonic() + timeout
        try:
            await self._launch_once(kernel, command, timeout)
        except KernelExited:
            kernel.log.warning("kernel process exited during start; starting it once more")
            kernel = self.new(kernel.record)
            try:
                await self._launch_once(kernel, command, max(0.0, deadline - time.monotonic()))
            except KernelExited as exc:
                raise launch_error(command, exc) from exc
        return kernel

    async def _launch_once(
        self, kernel: ManagedKernel, command: StartKernel, timeout: float
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                await kernel.km.start_kernel(**self.launch_kwargs(command, kernel))
                kernel.open_bridge()
                await kernel.wait_ready(timeout)
        except KernelExited:
            await self.discard(kernel)
            raise
        except BaseException as exc:
            await self.discard(kernel)
            raise launch_error(command, exc) from exc
        kernel.record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]

    async def restart(self, kernel: ManagedKernel, now: bool, timeout: float | None = None) -> None:
        """Restart the process (`now`: kill instead of asking) and wait until it is ready
        (`timeout`, else the worker's kernel_info_timeout). Client messages that arrive
        meanwhile are held and sent to the new kernel once it is ready."""
        kernel.bridge.hold_client_frames()
        ready = False
        try:
            await kernel.km.restart_kernel(now=now)
            # Fresh sockets even when the ports are the same: ZMQ state left over from the dead
            # process (a half-reconnected SUB, a DEALER queue) once stalled readiness for good.
            kernel.open_bridge()
            kernel.activity.execution_state = "starting"
            kernel.record.execution_state = "starting"
            await kernel.wait_ready(timeout or self.settings.kernel_info_timeout)
            ready = True
        finally:
            await kernel.bridge.release_client_frames(deliver=ready)
        kernel.record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]
        kernel.record.reason = ""
        await record_provisioner(kernel)
        kernel.record_changed()

    async def stop(self, kernel: ManagedKernel) -> None:
        """Ask the kernel to exit; kill it if it does not. A dead kernel is only cleaned up."""
        if kernel.record.execution_state == "dead" or kernel.km.provisioner is None:
            with contextlib.suppress(Exception):
                await kernel.km.cleanup_resources()
            return
        try:
            await asyncio.wait_for(
                kernel.km.shutdown_kernel(now=False), self.settings.shutdown_wait + 5
            )
        except Exception:
            with contextlib.suppress(Exception):
                await kernel.km.shutdown_kernel(now=True)

    async def discard(self, kernel: ManagedKernel) -> None:
        """Kill a kernel that never became (or no longer is) anyone's."""
        kernel.close_bridge()
        with contextlib.suppress(Exception):
            await kernel.km.shutdown_kernel(now=True)
        with contextlib.suppress(Exception):
            await kernel.km.cleanup_resources()

    def working_dir(self, command: StartKernel, kernel: ManagedKernel) -> str | None:
        """KERNEL_WORKING_DIR when it exists on this host (else ignored, with a warning)."""
        wanted = command.working_dir
        if not wanted or not self.settings.use_kernel_working_dir:
            return None
        if os.path.isdir(wanted):
            return wanted
        kernel.log.warning("KERNEL_WORKING_DIR %r does not exist on this worker; ignored", wanted)
        return None

    def launch_kwargs(self, command: StartKernel, kernel: ManagedKernel) -> dict[str, Any]:
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
        cwd = self.working_dir(command, kernel)
        if cwd:
            kwargs["cwd"] = cwd
        return kwargs

    def runtime_dir(self) -> Path:
        """Where this worker's kernels keep their connection files (made if absent)."""
        return self._runtime_dir()

    def _runtime_dir(self) -> Path:
        if self.settings.runtime_dir:
            path = Path(self.settings.runtime_dir)
        else:
            from jupyter_core.paths import jupyter_runtime_dir

            path = Path(jupyter_runtime_dir())
        path.mkdir(parents=True, exist_ok=True, mode=0o700)  # keys, ipc sockets
        return path


def launch_error(command: StartKernel, exc: BaseException) -> Exception:
    if isinstance(exc, LaunchFailed | LaunchTimeout):
        return exc
    if isinstance(exc, TimeoutError | asyncio.CancelledError):
        return LaunchTimeout(
            f"Kernel {command.kernel_id} did not start within {command.launch_timeout:.0f} s"
        )
    return LaunchFailed(f"Kernel {command.kernel_id} failed to start: {exc}")


async def record_provisioner(kernel: ManagedKernel) -> None:
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


async def exit_code(kernel: ManagedKernel) -> int | None:
    provisioner = kernel.km.provisioner
    if provisioner is None:
        return None
    with contextlib.suppress(Exception):
        code = await provisioner.poll()
        return int(code) if code is not None else None
    return None
