"""A real worker's warm pool grows with demand: a second burst of starts is served warm."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import psutil
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import ShutdownKernel, StartKernel, new_kernel_id
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus.testing.plugin import Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration

BURST = 3


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def start(nc: Client, wid: str) -> KernelRecord:
    command = StartKernel(kernel_id=new_kernel_id(), kernel_name="python3", launch_timeout=120)
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=150)
    assert reply.kernel is not None
    return reply.kernel


async def shutdown(nc: Client, kernel_id: str) -> None:
    await bus.request(
        nc, subjects.kernel_command(kernel_id), ShutdownKernel(kernel_id=kernel_id), 30
    )


def from_pool(record: KernelRecord) -> bool:
    """A pooled kernel was launched before its request: its process environment names the
    pool's placeholder id, not the id it was given."""
    assert record.pid is not None
    return psutil.Process(record.pid).environ()["KERNEL_ID"] != record.id


async def test_a_burst_after_a_burst_is_served_from_the_grown_pool(
    services: Services, nc: Client
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    services.worker(
        {
            "KERNELBUS_WORKER_ID": wid,
            "KERNELBUS_WORKER_POOL": "python3=1",
            "KERNELBUS_WORKER_POOL_MAX": str(BURST),
            "KERNELBUS_WORKER_POOL_DEMAND_WINDOW": "600",
        }
    )
    registry = await Registry.open(nc.jetstream())

    async def pooled(count: int) -> bool:
        workers = {w.worker_id: w for w in await registry.live_workers()}
        return wid in workers and workers[wid].pooled_kernels.get("python3", 0) >= count

    await until(lambda: pooled(1), 120, "the configured warm kernel")
    first = await asyncio.gather(*(start(nc, wid) for _ in range(BURST)))
    # A pool of one serves one of them warm; the others started cold.
    assert sum(map(from_pool, first)) == 1
    for record in first:
        await shutdown(nc, record.id)

    # The burst raised the pool's target to its size: the refill starts that many.
    await until(lambda: pooled(BURST), 180, f"{BURST} warm kernels after the burst")
    second = await asyncio.gather(*(start(nc, wid) for _ in range(BURST)))
    assert all(map(from_pool, second)), [r.id for r in second if not from_pool(r)]
    for record in second:
        await shutdown(nc, record.id)
