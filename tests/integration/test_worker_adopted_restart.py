"""A kernel re-adopted by a successor worker can be restarted, and a kernel restarted before
its worker crashed is re-adopted: adoption restores everything a restart needs."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import RestartKernel, ShutdownKernel, StartKernel, new_kernel_id
from kernelbus.models import KernelRecord
from kernelbus.processes import pid_running
from kernelbus.registry import Registry
from kernelbus.testing.busclient import BusConnection
from kernelbus.testing.plugin import Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def _start(nc: Client, wid: str, env: dict[str, str]) -> KernelRecord:
    command = StartKernel(kernel_id=new_kernel_id(), kernel_name="python3", env=env)
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=60)
    assert reply.kernel is not None
    return reply.kernel


async def _restart(nc: Client, kernel_id: str) -> KernelRecord:
    reply = await bus.request(
        nc, subjects.kernel_command(kernel_id), RestartKernel(kernel_id=kernel_id), 90
    )
    assert reply.kernel is not None
    return reply.kernel


async def _printed(nc: Client, kernel_id: str, code: str) -> str:
    conn = BusConnection(nc, kernel_id, session_id=uuid.uuid4().hex)
    await conn.attach()
    seen = await conn.execute(code)
    return "".join(m.content["text"] for m in seen if m.msg_type == "stream")


async def test_a_readopted_kernel_restarts_with_its_launch_environment(
    services: Services, nc: Client
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    crashed = services.worker({"KERNELBUS_WORKER_ID": wid})
    record = await _start(nc, wid, {"KERNEL_FLAVOUR": "mint"})
    crashed.kill()
    services.worker({"KERNELBUS_WORKER_ID": wid})
    restarted = await _restart(nc, record.id)
    assert restarted.pid != record.pid and restarted.execution_state != "dead"
    assert record.pid is not None and not pid_running(record.pid)
    printed = await _printed(nc, record.id, "import os; print(os.environ['KERNEL_FLAVOUR'])")
    assert printed == "mint\n"
    await bus.request(
        nc, subjects.kernel_command(record.id), ShutdownKernel(kernel_id=record.id), 30
    )


async def test_a_kernel_restarted_before_its_worker_crashed_is_readopted(
    services: Services, nc: Client
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    crashed = services.worker({"KERNELBUS_WORKER_ID": wid})
    record = await _start(nc, wid, {})
    restarted = await _restart(nc, record.id)
    assert await _printed(nc, record.id, "kept = 7; print(kept)") == "7\n"
    crashed.kill()
    services.worker({"KERNELBUS_WORKER_ID": wid})
    stored = await (await Registry.open(nc.jetstream())).get_kernel(record.id)
    assert stored is not None and stored.pid == restarted.pid != record.pid
    assert stored.execution_state != "dead", stored.reason
    assert await _printed(nc, record.id, "print(kept)") == "7\n"
    await bus.request(
        nc, subjects.kernel_command(record.id), ShutdownKernel(kernel_id=record.id), 30
    )


async def test_a_warm_pool_kernel_keeps_the_claimed_env_across_a_restart(
    services: Services, nc: Client
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    services.worker({"KERNELBUS_WORKER_ID": wid, "KERNELBUS_WORKER_POOL": "python3=1"})
    registry = await Registry.open(nc.jetstream())

    async def pool_full() -> bool:
        workers = {w.worker_id: w for w in await registry.live_workers()}
        return wid in workers and workers[wid].pooled_kernels.get("python3", 0) >= 1

    await until(pool_full, 60, "the warm pool to fill")
    record = await _start(nc, wid, {"KERNEL_FLAVOUR": "lime"})
    code = "import os; print(os.environ['KERNEL_FLAVOUR'])"
    assert await _printed(nc, record.id, code) == "lime\n"
    await _restart(nc, record.id)
    assert await _printed(nc, record.id, code) == "lime\n"
    await bus.request(
        nc, subjects.kernel_command(record.id), ShutdownKernel(kernel_id=record.id), 30
    )


async def test_a_successor_beats_while_it_re_adopts(services: Services, nc: Client) -> None:
    """A successor announces itself before its kernels are re-adopted. A stopped kernel (it
    neither answers nor publishes) holds its adoption up for the full kernel_info wait; when
    the heartbeat waited for adoption it aged out meanwhile (busy kernels did the same), the
    culler declared the worker lost and marked the kernels it was re-adopting dead."""
    wid = f"w-{uuid.uuid4().hex[:8]}"
    crashed = services.worker({"KERNELBUS_WORKER_ID": wid})
    record = await _start(nc, wid, {})
    registry = await Registry.open(nc.jetstream())
    (before,) = [w for w in await registry.live_workers() if w.worker_id == wid]
    os.kill(record.pid or 0, signal.SIGSTOP)
    try:
        crashed.kill()
        env = {"KERNELBUS_WORKER_ID": wid, "KERNELBUS_WORKER_KERNEL_INFO_TIMEOUT": "60"}
        # In a thread: `services.worker` returns once the worker logged "ready", after adoption.
        successor = asyncio.create_task(asyncio.to_thread(services.worker, env))

        async def successor_beats() -> bool:
            beats = [w for w in await registry.live_workers() if w.worker_id == wid]
            return any(w.started_at != before.started_at for w in beats)

        await until(successor_beats, timeout=60, what="the successor's heartbeat")
        stored = await registry.get_kernel(record.id)
        assert stored is not None and stored.execution_state != "dead", (
            "the successor's first heartbeat came only after its re-adoption gave up"
        )
        await successor
    finally:
        os.kill(record.pid or 0, signal.SIGCONT)
