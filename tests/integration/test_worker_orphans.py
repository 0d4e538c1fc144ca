"""A worker starting on a host reaps the kernel processes a crashed predecessor left in its
runtime dir that nobody will adopt (its warm pool), so repeated crashes do not pile up
orphans, while the kernels it re-adopts live on with their state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import ShutdownKernel, StartKernel
from kernelbus.models import KernelRecord
from kernelbus.processes import kernels_under, orphaned_kernels, pid_running, wait_for
from kernelbus.testing.busclient import BusConnection
from kernelbus.testing.plugin import Services
from kernelbus_worker.adoption import unadoptable


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def record(kernel_id: str, worker_id: str, state: str = "idle", pid: int = 1) -> KernelRecord:
    return KernelRecord(
        id=kernel_id,
        name="python3",
        worker_id=worker_id,
        execution_state=state,  # type: ignore[arg-type]
        pid=pid,
    )


def test_only_kernels_nobody_will_adopt_are_reaped() -> None:
    leftovers = {"adopted": 10, "pool": 11, "mine-dead": 12, "other-live": 13, "other-dead": 14}
    records = {
        "adopted": record("adopted", "me", pid=10),
        "mine-dead": record("mine-dead", "me", "dead", pid=12),
        "other-live": record("other-live", "other", pid=13),
        "other-dead": record("other-dead", "other", "dead", pid=14),
    }
    managed: dict[str, Any] = {
        "adopted": SimpleNamespace(record=records["adopted"]),
        "mine-dead": SimpleNamespace(record=records["mine-dead"]),  # adoption failed
    }
    reap = unadoptable(leftovers, records, "me", cast(Any, managed))
    assert reap == {"pool": 11, "mine-dead": 12, "other-dead": 14}


def test_an_adopted_id_with_another_process_is_reaped() -> None:
    adopted = record("k", "me", pid=10)
    managed: dict[str, Any] = {"k": SimpleNamespace(record=adopted)}
    assert unadoptable({"k": 99}, {"k": adopted}, "me", cast(Any, managed)) == {"k": 99}


def test_a_claimed_pool_kernel_is_known_by_its_pid_not_its_file_name() -> None:
    # A warm-pool kernel keeps the connection file named after its pool id once claimed.
    adopted = record("k", "me", pid=10)
    managed: dict[str, Any] = {"k": SimpleNamespace(record=adopted)}
    leftovers = {"pool-id": 10, "other-pool-id": 13, "unclaimed": 11}
    records = {"k": adopted, "o": record("o", "other", pid=13)}
    assert unadoptable(leftovers, records, "me", cast(Any, managed)) == {"unclaimed": 11}


@pytest.mark.integration
async def test_repeated_worker_crashes_leave_no_orphans(services: Services, nc: Client) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    env = {"KERNELBUS_WORKER_ID": wid, "KERNELBUS_WORKER_POOL": "python3=1"}
    worker = services.worker(env)
    command = StartKernel(kernel_id=str(uuid.uuid4()), kernel_name="python3")
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=60)
    assert reply.kernel is not None
    kept = reply.kernel
    conn = BusConnection(nc, kept.id)
    await conn.attach()
    await conn.execute("kept = 'still here'")
    for _ in range(3):
        # The started kernel and the warm pool's refill: two kernel processes.
        wait_for(lambda: len(kernels_under(services.runtime_dir)) == 2, 60, "the pool refill")
        worker.kill()
        left = orphaned_kernels(services.runtime_dir)
        assert set(left) >= {kept.id} and len(left) == 2
        pool_pid = next(pid for kid, pid in left.items() if kid != kept.id)
        worker = services.worker(env)
        assert not pid_running(pool_pid)  # reaped by the successor before it said ready
        assert pid_running(kept.pid or 0)  # re-adopted
    again = BusConnection(nc, kept.id)
    await again.attach()
    seen = await again.execute("print(kept)")
    assert any(m.msg_type == "stream" and "still here" in m.content["text"] for m in seen)
    wait_for(lambda: len(kernels_under(services.runtime_dir)) == 2, 60, "the pool refill")
    await bus.request(nc, subjects.kernel_command(kept.id), ShutdownKernel(kernel_id=kept.id), 30)
