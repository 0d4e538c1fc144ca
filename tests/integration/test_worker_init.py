"""kernelbus-worker-init (the kernel-worker container's entrypoint): a crash of the worker
process keeps its kernels: the init restarts it with the same worker id and it re-adopts them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import nats
import psutil
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import ShutdownKernel, StartKernel, new_kernel_id
from kernelbus.models import KernelRecord
from kernelbus.processes import wait_for
from kernelbus.registry import Registry
from kernelbus.testing.busclient import BusConnection
from kernelbus.testing.plugin import Services
from kernelbus_worker.init import CrashLoop, pinned_env

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def _worker_of(init_pid: int) -> int:
    """The kernelbus-worker process the init runs (its only child that is not a kernel)."""
    for child in psutil.Process(init_pid).children():
        with contextlib.suppress(psutil.Error):  # gone, or a zombie: not the worker
            if "kernelbus-worker" in " ".join(child.cmdline()):
                return child.pid
    raise AssertionError("the init runs no worker")


def _environ(pid: int) -> dict[str, str]:
    return psutil.Process(pid).environ()


def test_the_worker_id_is_pinned_once() -> None:
    env = pinned_env({"PATH": "/bin"})
    assert env["KERNELBUS_WORKER_ID"] and env["PATH"] == "/bin"
    assert pinned_env({"KERNELBUS_WORKER_ID": "w-1"})["KERNELBUS_WORKER_ID"] == "w-1"


def test_a_crash_loop_gives_up() -> None:
    loop = CrashLoop(limit=3, window=60)
    assert loop.record(0.0) and loop.record(1.0)
    assert not loop.record(2.0)
    assert CrashLoop(limit=3, window=60).record(0.0)
    spaced = CrashLoop(limit=3, window=10)
    assert all(spaced.record(t * 11.0) for t in range(10))


async def test_a_crashed_worker_process_comes_back_and_keeps_its_kernels(
    services: Services, nc: Client
) -> None:
    init = services.spawn(
        "kernelbus-worker-init",
        {"KERNELBUS_WORKER_RUNTIME_DIR": str(services.runtime_dir), "KERNELBUS_WORKER_ID": ""},
    )
    wait_for(lambda: "kernel-worker ready" in init.log(), 60, "the worker", init)
    registry = await Registry.open(nc.jetstream())
    first_worker = _worker_of(init.pid)
    wid = _environ(first_worker)["KERNELBUS_WORKER_ID"]
    assert wid, "the init gave its worker an id"
    command = StartKernel(kernel_id=new_kernel_id(), kernel_name="python3")
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=60)
    assert reply.kernel is not None
    record: KernelRecord = reply.kernel
    conn = BusConnection(nc, record.id)
    await conn.attach()
    await conn.execute("kept = 'still here'")

    os.kill(first_worker, signal.SIGKILL)
    wait_for(lambda: init.log().count("kernel-worker ready") >= 2, 60, "the restart", init)
    assert "restarting" in init.log()
    second_worker = _worker_of(init.pid)
    assert second_worker != first_worker
    assert _environ(second_worker)["KERNELBUS_WORKER_ID"] == wid
    stored = await registry.get_kernel(record.id)
    assert stored is not None and stored.worker_id == wid and stored.pid == record.pid
    again = BusConnection(nc, record.id)
    await again.attach()
    seen = await again.execute("print(kept)")
    assert any(m.msg_type == "stream" and "still here" in m.content["text"] for m in seen)
    await bus.request(
        nc, subjects.kernel_command(record.id), ShutdownKernel(kernel_id=record.id), 30
    )

    init.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(init.process.wait, 30) == 0
