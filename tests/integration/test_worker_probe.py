"""The culler's liveness probe (ADR 0016): a worker host whose NATS connections are all gone
is lost after `KERNELBUS_CULLER_WORKER_DISCONNECT_GRACE`, without waiting for its heartbeat to
age out; a worker *process* restarted by kernelbus-worker-init is not lost, because the init
answers the probe meanwhile.

Real nats-server (a private one: the culler acts on every kernel of its registry), real
kernelbus-worker-init, worker, culler processes and a real ipykernel kernel. The grace is
shorter than any worker restart (0.5 s backoff plus Python's start-up), so the crash test
fails if nothing answers for the restarting worker. Times are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psutil
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import ShutdownKernel, StartKernel, new_kernel_id
from kernelbus.models import KernelRecord
from kernelbus.natsserver import NatsServer
from kernelbus.processes import ServiceProcess, wait_for
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings
from kernelbus.testing.busclient import BusConnection
from kernelbus.testing.plugin import Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration

GRACE = "0.5"
STEADY = "judging workers and kernels again"


@dataclass
class Host:
    """A worker "container": kernelbus-worker-init, its worker process and one kernel."""

    init: ServiceProcess
    worker_id: str
    record: KernelRecord
    culler: ServiceProcess
    nc: Client
    registry: Registry


def _worker_of(init_pid: int) -> int:
    for child in psutil.Process(init_pid).children():
        with contextlib.suppress(psutil.Error):  # gone, or a zombie: not the worker
            if any(arg.endswith("kernelbus-worker") for arg in child.cmdline()):
                return child.pid
    raise AssertionError("the init runs no worker")


@pytest.fixture
async def host(services: Services, fresh_nats: NatsServer) -> AsyncIterator[Host]:
    url = fresh_nats.url
    nc = await bus.connect(BusSettings(nats_url=url), name="probe-test")
    try:
        culler = services.spawn(
            "kernelbus-culler",
            {
                "KERNELBUS_CULLER_CULL_IDLE_TIMEOUT": "0",
                "KERNELBUS_CULLER_WORKER_DISCONNECT_GRACE": GRACE,
                "KERNELBUS_CULLER_WORKER_PROBE_INTERVAL": "0.25",
            },
            url,
        )
        init = services.spawn(
            "kernelbus-worker-init",
            {"KERNELBUS_WORKER_RUNTIME_DIR": str(services.runtime_dir), "KERNELBUS_WORKER_ID": ""},
            url,
        )
        wait_for(lambda: "kernel-worker ready" in init.log(), 60, "the worker", init)
        wait_for(lambda: "answering liveness pings" in init.log(), 60, "the init's answers", init)
        worker_id = _environ(_worker_of(init.pid))["KERNELBUS_WORKER_ID"]
        command = StartKernel(kernel_id=new_kernel_id(), kernel_name="python3")
        reply = await bus.request(nc, subjects.worker_start(worker_id), command, timeout=60)
        assert reply.kernel is not None
        # The culler judges workers once its bus has been steady for a heartbeat TTL.
        wait_for(lambda: STEADY in culler.log(), 60, "the culler judging workers", culler)
        yield Host(init, worker_id, reply.kernel, culler, nc, await Registry.open(nc.jetstream()))
    finally:
        await nc.drain()


def _environ(pid: int) -> dict[str, str]:
    return psutil.Process(pid).environ()


async def test_a_restarting_worker_process_is_not_lost(host: Host) -> None:
    conn = BusConnection(host.nc, host.record.id)
    await conn.attach()
    await conn.execute("kept = 'still here'")
    first = _worker_of(host.init.pid)
    os.kill(first, signal.SIGKILL)
    # The worker process is gone: only the init answers the probe now.
    assert await bus.ping(host.nc, subjects.worker_ping(host.worker_id), 5, on_timeout=True) is True
    wait_for(lambda: host.init.log().count("kernel-worker ready") >= 2, 60, "the restart")
    again = BusConnection(host.nc, host.record.id)
    await again.attach()
    seen = await again.execute("print(kept)")
    assert any(m.msg_type == "stream" and "still here" in m.content["text"] for m in seen)
    record = await host.registry.get_kernel(host.record.id)
    assert record is not None and record.execution_state != "dead", record
    assert "lost (" not in host.culler.log()
    await bus.request(
        host.nc,
        subjects.kernel_command(host.record.id),
        ShutdownKernel(kernel_id=host.record.id),
        30,
    )


async def test_a_killed_worker_host_is_lost_without_waiting_for_its_heartbeat(
    host: Host,
) -> None:
    worker = _worker_of(host.init.pid)
    killed = time.monotonic()
    for pid in (host.init.pid, worker, host.record.pid):  # the whole "container"
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def dead() -> bool:
        record = await host.registry.get_kernel(host.record.id)
        return record is not None and record.execution_state == "dead"

    await until(dead, 60, "the kernel dead")
    print(f"\nkernel dead {time.monotonic() - killed:.1f} s after its host was killed")
    record = await host.registry.get_kernel(host.record.id)
    assert record is not None and record.reason == f"worker {host.worker_id} lost"
    # Found by the probe, not by the heartbeat's expiry (10 s TTL).
    lost = [line for line in host.culler.log().splitlines() if "lost (" in line]
    assert lost and f"no connection left for {float(GRACE):g} s" in lost[0], lost
