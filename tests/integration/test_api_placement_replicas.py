"""Placement across api replicas: two replicas starting kernels at once respect each worker's
capacity and use every slot, although neither counts the other's in-flight starts.

Worker `w-big` has 3 slots, `w-small` 1; four starts arrive at once, two through each replica.
Each replica alone ranks `w-big` first for both of its starts (most free slots), so four starts
go to `w-big`: it refuses the fourth as full (it counts its running and starting kernels,
whoever placed them), and before the api retried elsewhere that client got 403 while
`w-small` sat empty. Real nats-server, workers, api processes and ipykernel kernels.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import nats
import pytest

from kernelbus import natsserver
from kernelbus.registry import Registry
from kernelbus.testing.plugin import ApiProcess, Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration

CAPACITY = {"w-big": 3, "w-small": 1}


async def test_two_replicas_fill_every_slot_and_never_overfill_a_worker(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    for worker_id, slots in CAPACITY.items():
        env = {"KERNELBUS_WORKER_ID": worker_id, "KERNELBUS_WORKER_MAX_KERNELS": str(slots)}
        services.worker(env, nats_url=fresh_nats.url)
    replicas = [services.api(nats_url=fresh_nats.url, token="") for _ in range(2)]
    nc = await nats.connect(fresh_nats.url)
    try:
        registry = await Registry.open(nc.jetstream())

        async def both_seen() -> bool:
            return {w.worker_id for w in await registry.live_workers()} == set(CAPACITY)

        await until(both_seen, 60, "both workers' heartbeats")

        async def start(api: ApiProcess) -> httpx.Response:
            async with httpx.AsyncClient(base_url=api.url, timeout=120) as client:
                return await client.post("/api/kernels", json={"name": "python3"})

        # Four starts at once, two per replica: as many as there are slots.
        answers = await asyncio.gather(*(start(api) for api in replicas for _ in range(2)))
        assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
        owners: Counter[str] = Counter()
        for answer in answers:
            record = await registry.get_kernel(answer.json()["id"])
            assert record is not None
            owners[record.worker_id] += 1
        assert owners == Counter(CAPACITY), f"placement {dict(owners)}"
        # Every slot taken: one more start is refused as unavailable (503), nothing started.
        extra = await start(replicas[1])
        assert extra.status_code == 503, extra.text
        assert len(await registry.kernel_summaries()) == 4
        async with httpx.AsyncClient(base_url=replicas[0].url, timeout=60) as client:
            for answer in answers:
                deleted = await client.delete(f"/api/kernels/{answer.json()['id']}")
                assert deleted.status_code == 204
    finally:
        await nc.close()
