"""The warm pool's size follows demand (pure logic: clock passed in, fake launches)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from kernelbus_worker.kernel import ManagedKernel
from kernelbus_worker.pool import WarmPool
from kernelbus_worker.poolsizes import PoolDemand, parse_pool_sizes


def demand(size: int = 1, maximum: int = 10, window: float = 60.0) -> PoolDemand:
    return PoolDemand({"python3": size}, maximum, window)


def test_without_starts_the_target_is_the_configured_size() -> None:
    assert demand(2).target("python3", now=0.0) == 2
    assert demand(0).target("python3", now=0.0) == 0


def test_a_burst_raises_the_target_to_its_size() -> None:
    d = demand(1)
    for i in range(7):
        d.started("python3", now=100.0 + i * 0.01)
    assert d.target("python3", now=101.0) == 7


def test_the_target_never_exceeds_the_maximum() -> None:
    d = demand(1, maximum=5)
    for _ in range(20):
        d.started("python3", now=10.0)
    assert d.target("python3", now=10.0) == 5


def test_the_configured_size_wins_over_a_smaller_maximum() -> None:
    d = demand(3, maximum=1)
    for _ in range(20):
        d.started("python3", now=10.0)
    assert d.target("python3", now=10.0) == 3


def test_demand_ages_out_after_the_window() -> None:
    d = demand(1, window=60.0)
    for _ in range(6):
        d.started("python3", now=0.0)
    d.started("python3", now=50.0)
    assert d.target("python3", now=59.0) == 7
    assert d.target("python3", now=61.0) == 1  # only the start at 50 s is still recent
    assert d.target("python3", now=111.0) == 1


def test_specs_without_a_pool_are_not_pooled() -> None:
    d = demand(1)
    for _ in range(5):
        d.started("ir", now=0.0)
    assert d.target("ir", now=0.0) == 0
    assert d.targets(now=0.0) == {"python3": 1}


def test_pool_sizes_syntax() -> None:
    assert parse_pool_sizes("python3=2, r=0") == {"python3": 2, "r": 0}
    with pytest.raises(ValueError, match="name=count"):
        parse_pool_sizes("python3")


class FakeKernels:
    """Launches that finish when the test says so, and the order of events."""

    def __init__(self) -> None:
        self.launched = 0
        self.discarded = 0
        self.events: list[str] = []

    async def launch(self, name: str) -> ManagedKernel:
        self.launched += 1
        self.events.append(f"launch {name}")
        await asyncio.sleep(0)
        return cast(ManagedKernel, object())

    async def discard(self, kernel: Any) -> None:
        self.discarded += 1


async def test_fill_reaches_the_demand_target_within_room() -> None:
    fake = FakeKernels()
    pool = WarmPool({"python3": 1}, fake.launch, fake.discard)
    await pool.fill(lambda: 10, lambda: {"python3": 4})
    assert pool.counts() == {"python3": 4}
    await pool.fill(lambda: 2 - len(pool), lambda: {"python3": 4})  # no room left: no launch
    assert fake.launched == 4


async def test_shrink_stops_what_demand_no_longer_asks_for() -> None:
    fake = FakeKernels()
    pool = WarmPool({"python3": 1}, fake.launch, fake.discard)
    await pool.fill(lambda: 10, lambda: {"python3": 5})
    await pool.shrink({"python3": 1})
    assert pool.counts() == {"python3": 1}
    assert fake.discarded == 4


async def test_each_launch_waits_for_no_start_in_flight() -> None:
    """A refill launches nothing while a start is being served; it goes on after."""
    fake = FakeKernels()
    pool = WarmPool({"python3": 1}, fake.launch, fake.discard)
    quiet = asyncio.Event()

    async def wait_quiet() -> None:
        fake.events.append("wait")
        await quiet.wait()

    filling = asyncio.create_task(pool.fill(lambda: 10, lambda: {"python3": 2}, wait_quiet))
    for _ in range(5):
        await asyncio.sleep(0)
    assert fake.launched == 0 and fake.events == ["wait"]
    quiet.set()
    await filling
    assert fake.launched == 2
    assert fake.events == ["wait", "launch python3", "wait", "launch python3"]


async def test_a_refill_stops_when_its_kernels_were_all_taken_meanwhile_and_room_is_gone() -> None:
    fake = FakeKernels()
    pool = WarmPool({"python3": 1}, fake.launch, fake.discard)
    room = [10]

    async def wait_quiet() -> None:
        room[0] = 0  # the starts served meanwhile took the capacity

    await pool.fill(lambda: room[0], lambda: {"python3": 3}, wait_quiet)
    assert fake.launched == 0


class FakeFactory:
    """What WarmStarts needs of the worker's KernelFactory; launches wait for `go`."""

    def __init__(self) -> None:
        self.settings = type(
            "S",
            (),
            {"pool_max": 10, "pool_demand_window": 60.0, "id": "w", "kernel_info_timeout": 5},
        )()
        self.go = asyncio.Event()
        self.launched = 0
        self.discarded = 0

    def new(self, record: Any) -> Any:
        return object()

    async def launch(self, kernel: Any, command: Any, timeout: float) -> None:
        self.launched += 1
        await self.go.wait()

    async def discard(self, kernel: Any) -> None:
        self.discarded += 1


async def test_draining_ends_a_refill_after_its_current_launch_and_stops_that_kernel() -> None:
    from kernelbus_worker.pool import WarmStarts

    factory = FakeFactory()
    starts = WarmStarts(cast(Any, factory), {"python3": 3}, room=lambda: 10)
    refill = asyncio.create_task(starts.refill())
    for _ in range(5):
        await asyncio.sleep(0)
    assert factory.launched == 1  # the first of three, in progress
    drain = asyncio.create_task(starts.drain())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not drain.done()  # waits for the launch under way
    factory.go.set()
    await asyncio.gather(refill, drain)
    assert factory.launched == 1 and factory.discarded == 1 and len(starts) == 0
    await starts.refill()  # a periodic refill after the drain starts nothing
    assert factory.launched == 1
