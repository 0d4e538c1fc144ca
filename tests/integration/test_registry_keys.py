"""Listing KV keys under load: nats-py's `KeyValue.keys()` can report an empty bucket when
the server counts the last message as delivered before the client has it; the api then saw
no live worker (503 on POST /api/kernels). `kernelbus.bus_kv.kv_keys` has no such window."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from kernelbus import bus
from kernelbus.bus_kv import kv_keys
from kernelbus.models import KernelRecord
from kernelbus.natsserver import NatsServer
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings

pytestmark = pytest.mark.integration


async def test_concurrent_listings_never_miss_a_key_being_rewritten(
    fresh_nats: NatsServer,
) -> None:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), name="kv-keys-test")
    try:
        kv = await nc.jetstream().create_key_value(
            config=KeyValueConfig(bucket="keys_test", history=1, ttl=30)
        )
        await kv.put("worker-a", b"1")
        rewriting = asyncio.create_task(_rewrite(kv, "worker-a"))
        try:
            # 8 listers at once, as api requests are served: keys() misses here regularly.
            listings = await asyncio.gather(*(_list_many(nc.jetstream()) for _ in range(8)))
        finally:
            rewriting.cancel()
        assert all(keys == ["worker-a"] for batch in listings for keys in batch)
    finally:
        await bus.close(nc)


async def test_deleted_kernels_are_not_listed(fresh_nats: NatsServer) -> None:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), name="kv-keys-test")
    try:
        js = nc.jetstream()
        await bus.ensure_infrastructure(js)
        registry = await Registry.open(js)
        kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
        for kernel_id in (kept, gone):
            await registry.put_kernel(KernelRecord(id=kernel_id, name="python3", worker_id="w"))
        await registry.delete_kernel(gone)
        assert [r.id for r in await registry.list_kernels()] == [kept]
    finally:
        await bus.close(nc)


async def _rewrite(kv: KeyValue, key: str) -> None:
    while True:
        await kv.put(key, b"1")
        await asyncio.sleep(0.01)


async def _list_many(js: JetStreamContext) -> list[list[str]]:
    return [await kv_keys(js, "keys_test") for _ in range(40)]
