"""A worker that died since its last heartbeat is still listed until that heartbeat ages out
(or, during a JetStream leader election, in the api's last good worker list: ADR 0023). A
start placed on it meets no responder: nothing was started, so the api asks the next worker
instead of answering 503."""

from __future__ import annotations

import httpx
import nats
import pytest

from kernelbus import bus, natsserver, subjects
from kernelbus.registry import Registry
from kernelbus.testing.plugin import Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration


async def test_a_start_placed_on_a_dead_worker_goes_to_the_next(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    # Equal workers with no pool: ties go to the lowest id, the one about to die.
    dead = services.worker(
        {"KERNELBUS_WORKER_ID": "a-dies", "KERNELBUS_WORKER_POOL": ""}, fresh_nats.url
    )
    services.worker({"KERNELBUS_WORKER_ID": "b-lives", "KERNELBUS_WORKER_POOL": ""}, fresh_nats.url)
    api = services.api(nats_url=fresh_nats.url, token="")
    nc = await nats.connect(fresh_nats.url)
    try:
        registry = await Registry.open(nc.jetstream())
        dead.kill()

        async def unanswered() -> bool:
            ping = await bus.ping(nc, subjects.worker_ping("a-dies"), 2, on_timeout=True)
            return ping is False

        await until(unanswered, timeout=30, what="the dead worker's subscriptions gone")
        listed = {w.worker_id for w in await registry.live_workers()}
        assert "a-dies" in listed, f"its heartbeat aged out already: {listed}"
        async with httpx.AsyncClient(base_url=api.url, timeout=90) as client:
            created = await client.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201, created.text
            kernel_id = created.json()["id"]
            record = await registry.get_kernel(kernel_id)
            assert record is not None and record.worker_id == "b-lives"
            assert "a-dies did not answer (no responder)" in api.service.log()
            assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204
    finally:
        await nc.close()
