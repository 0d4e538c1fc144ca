"""Re-adopting kernels that outlived their worker.

Kernels run in their own session, so a worker that crashes leaves them running. A successor
with the same worker id finds them in the registry, restores the provisioner from
`get_provisioner_info` (PROTOCOLS, DESIGN "State") and reconnects its ZMQ bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import psutil
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from kernelbus.messages import StartKernel
from kernelbus.models import KernelRecord
from kernelbus_worker.factory import KernelFactory
from kernelbus_worker.keeperclient import KeeperClient, KeeperUnavailable
from kernelbus_worker.kernel import ManagedKernel


class AdoptedProcess(psutil.Process):
    """psutil's handle on a kernel process this worker did not spawn, answering the `Popen`
    calls `LocalProvisioner` makes (a successor has only the pid). psutil refuses to signal
    a process that merely reused the pid; a kernel that is gone ignores signals, as before.
    """

    stdin = stdout = stderr = None

    def poll(self) -> int | None:
        """None while it runs; -1 once gone (not our child: its exit status is not ours)."""
        try:
            running = self.is_running() and self.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            running = False
        return None if running else -1

    def wait(self, timeout: float | None = None) -> int:
        code = self.poll()
        return -1 if code is None else code

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            super().send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def unadoptable(
    leftovers: dict[str, int],
    records: dict[str, KernelRecord],
    worker_id: str,
    managed: dict[str, ManagedKernel],
) -> dict[str, int]:
    """Which of the kernel processes a previous worker left on this host (kernel id → pid)
    nobody will adopt: not re-adopted by this worker (`managed`, not dead, same pid), and not
    a live kernel of another worker id, which may still come back for it. Unclaimed warm-pool
    kernels (never in the registry) and kernels whose record is gone or dead are among them."""
    # A claimed warm-pool kernel keeps the connection file named after its pool id, so a
    # process is also recognised by its pid (same host: the runtime dir is this host's).
    kept_pids = {k.record.pid for k in managed.values() if _live(k.record) and k.record.pid}
    kept_pids |= {
        r.pid for r in records.values() if r.worker_id != worker_id and _live(r) and r.pid
    }
    reap = {}
    for kernel_id, pid in leftovers.items():
        if pid in kept_pids:
            continue  # a live kernel under another id: re-adopted, or another worker's
        kernel = managed.get(kernel_id)
        if kernel is not None and _live(kernel.record) and kernel.record.pid in (None, pid):
            continue  # re-adopted by this worker
        record = records.get(kernel_id)
        if record is not None and record.worker_id != worker_id and _live(record):
            continue  # another worker's: it may come back for it
        reap[kernel_id] = pid
    return reap


def _live(record: KernelRecord) -> bool:
    return record.execution_state != "dead"


async def restore_manager(km: AsyncKernelManager, record: KernelRecord) -> None:
    """Point `km` at the running kernel `record` describes (ports, key, provisioner)."""
    km.load_connection_info(dict(record.connection_info))  # type: ignore[arg-type]
    factory = KernelProvisionerFactory.instance(parent=km.parent)
    provisioner = factory.create_provisioner_instance(record.id, km.kernel_spec, parent=km)
    info = {
        k: v
        for k, v in record.provisioner_info.items()
        if k not in ("provisioner_name", "provisioner_class")
    }
    await provisioner.load_provisioner_info(info)
    if isinstance(provisioner, LocalProvisioner) and record.pid:
        # A pid that is gone leaves the provisioner without a process: `reattach` says so.
        with contextlib.suppress(psutil.NoSuchProcess):
            provisioner.process = AdoptedProcess(record.pid)  # type: ignore[assignment]
    km.provisioner = provisioner


async def backfill(kernel: ManagedKernel, keeper: KeeperClient) -> None:
    """Deliver what the kernel published while no worker was connected, from the keeper's
    window (ADR 0014), before the live output held since this bridge connected; once the
    first live message proved the subscription connected (wait_ready proves it too)."""
    await kernel.bridge.iopub_live.wait()
    try:
        earlier = await asyncio.wait_for(keeper.fetch(kernel.id), 10)
    except (KeeperUnavailable, TimeoutError) as exc:
        kernel.log.warning("no output from the iopub keeper (%s): the gap is lost", exc)
        earlier = []
    delivered = await kernel.bridge.backfill(earlier)
    kernel.log.info(
        "delivered %d iopub messages the keeper kept (of %d after the last acked)",
        delivered,
        len(earlier),
    )


BUSY_AFTER = 2.0
"""Seconds a kernel whose iopub is live may take to answer kernel_info before it is adopted
busy: an idle kernel answers at once, a busy one only when its cell ends. Waiting the full
timeout held up the successor's start (and its heartbeat) by 10 s per busy kernel."""


async def _ready_or_live(kernel: ManagedKernel, timeout: float) -> bool:
    """True once the kernel answered kernel_info (state known); False once its live iopub
    proved it there but it did not answer within `BUSY_AFTER`. Raises `TimeoutError` if
    neither within `timeout`, or if the process is gone."""
    ready = asyncio.ensure_future(kernel.wait_ready(timeout))
    live = asyncio.ensure_future(kernel.bridge.iopub_live.wait())
    try:
        await asyncio.wait({ready, live}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await asyncio.wait({ready}, timeout=BUSY_AFTER)
        if ready.done():
            ready.result()  # raises what went wrong
            return True
        if not await kernel.km.is_alive():
            raise TimeoutError("the kernel process is gone")
        return False
    finally:
        for task in (ready, live):
            task.cancel()
        await asyncio.gather(ready, live, return_exceptions=True)


async def reattach(factory: KernelFactory, record: KernelRecord, timeout: float) -> ManagedKernel:
    """The running kernel `record` describes, with its bridge reconnected; raises if gone."""
    kernel = factory.new(record)
    kernel.bridge.readopted = True
    kernel.connections.buffer_unclaimed()  # before the keeper's backfill: it is owed too
    await restore_manager(kernel.km, record)
    if not await kernel.km.is_alive():
        raise RuntimeError("the kernel process is gone")
    # What jupyter_client keeps from start_kernel to restart with (it refuses without).
    relaunch = StartKernel(
        kernel_id=record.id,
        kernel_name=record.name,
        env=record.launch_env,
        working_dir=record.working_dir,
    )
    kernel.km._launch_args = factory.launch_kwargs(relaunch, kernel)
    kernel.km._attempted_start = True  # so a restart gets a fresh `ready` future
    kernel.open_bridge()
    filling: asyncio.Task[None] | None = None
    if factory.keeper is not None:
        # As soon as our subscription is live (a busy kernel answers kernel_info only when
        # its cell ends: the gap's output must not wait for that).
        kernel.bridge.hold_iopub_for_backfill()
        filling = asyncio.get_running_loop().create_task(backfill(kernel, factory.keeper))
    try:
        if not await _ready_or_live(kernel, timeout):
            # A kernel running a long cell answers kernel_info only when the cell ends; its
            # live iopub proves it is there and connected: adopt it busy, not lose it (its
            # statuses correct the state as they come).
            kernel.activity.execution_state = "busy"
            kernel.log.info("re-adopting a busy kernel (it answers kernel_info when its cell ends)")
        if filling is not None:
            await filling
    except BaseException:
        if filling is not None:
            filling.cancel()
        kernel.close_bridge()
        raise
    kernel.record.execution_state = kernel.activity.execution_state  # type: ignore[assignment]
    return kernel
