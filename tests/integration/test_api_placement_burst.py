"""A burst of six starts against three real workers spreads over all three (before the api
counted its own recent placements, every start of a burst went to one worker: they all saw
the same heartbeat snapshot, taken every 2 s)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import nats
import pytest

from kernelbus import natsserver
from kernelbus.registry import Registry
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration

WORKERS = ("w-a", "w-b", "w-c")


async def _until_pools_ready(registry: Registry) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = {
            w.worker_id
            for w in await registry.live_workers()
            if w.pooled_kernels.get("python3", 0) >= 1
        }
        if ready >= set(WORKERS):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the workers' warm pools never filled")


async def test_a_burst_of_starts_spreads_over_workers(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    for worker_id in WORKERS:
        env = {"KERNELBUS_WORKER_ID": worker_id, "KERNELBUS_WORKER_POOL": "python3=1"}
        services.worker(env, nats_url=fresh_nats.url)
    api = services.api(nats_url=fresh_nats.url, token="")
    nc = await nats.connect(fresh_nats.url)
    try:
        registry = await Registry.open(nc.jetstream())
        await _until_pools_ready(registry)
        async with httpx.AsyncClient(base_url=api.url, timeout=90) as client:

            async def start() -> str:
                created = await client.post("/api/kernels", json={})
                assert created.status_code == 201, created.text
                record = await registry.get_kernel(created.json()["id"])
                assert record is not None
                return record.worker_id

            # A burst: six starts in flight at once, all before any new heartbeat.
            owners = await asyncio.gather(*(start() for _ in range(6)))
            placed = Counter(owners)
            assert set(placed) == set(WORKERS), f"placement {owners}"
            assert max(placed.values()) <= 3, f"placement {owners}"
            for kernel in (await client.get("/api/kernels")).json():
                assert (await client.delete(f"/api/kernels/{kernel['id']}")).status_code == 204
    finally:
        await nc.close()
