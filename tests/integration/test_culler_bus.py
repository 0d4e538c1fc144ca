"""The culler's pieces against a real nats-server (a private one per test, because a culler
acts on every kernel of the registry): leases, culling once across replicas, worker loss.

The owning worker is played by a responder on the kernel's command subject, so these tests
need no kernels; tests/integration/test_culler_service.py runs the real services.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from kernelbus import bus, events, subjects
from kernelbus.bus_kv import Bucket
from kernelbus.eventpublisher import EventPublisher
from kernelbus.framing import unpack_v1
from kernelbus.messages import KernelReply, ShutdownKernel
from kernelbus.models import ExecutionState, KernelRecord, WorkerHeartbeat
from kernelbus.natsserver import NatsServer
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings
from kernelbus.testing.waiting import until
from kernelbus.timefmt import utcnow
from kernelbus_culler.culling import Culler
from kernelbus_culler.leases import Leases
from kernelbus_culler.settings import CullerSettings
from kernelbus_culler.worker_loss import WorkerLossHandler

pytestmark = pytest.mark.integration


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    registry: Registry
    publisher: EventPublisher
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, schema_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["__schema__"] == schema_id]


@pytest.fixture
async def kb(fresh_nats: NatsServer) -> AsyncIterator[Bus]:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), name="culler-test")
    js = nc.jetstream()
    await bus.ensure_infrastructure(js)
    publisher = await EventPublisher.open(js, "culler-test")
    state = Bus(nc, js, await Registry.open(js), publisher)

    async def on_event(msg: Msg) -> None:
        state.events.append(json.loads(msg.data))

    await nc.subscribe(f"{subjects.EVENTS_SUBJECT_PREFIX}.>", cb=on_event)
    try:
        yield state
    finally:
        await publisher.close()
        await nc.drain()


def settings(**overrides: Any) -> CullerSettings:
    base: dict[str, Any] = {"cull_idle_timeout": 3, "cull_interval": 1, "command_timeout": 5}
    return CullerSettings(**{**base, **overrides})


async def culler(kb: Bus, **overrides: Any) -> Culler:
    s = settings(**overrides)
    leases = Leases(await Bucket.open(kb.nc, subjects.CULL_BUCKET), s.culler_id)
    return Culler(s, kb.nc, kb.registry, leases, kb.publisher)


async def put_kernel(
    kb: Bus, state: ExecutionState = "idle", idle: float = 60, worker_id: str = "w1"
) -> KernelRecord:
    record = KernelRecord(
        id=str(uuid.uuid4()),
        name="python3",
        worker_id=worker_id,
        execution_state=state,
        last_activity=utcnow() - timedelta(seconds=idle),
    )
    await kb.registry.put_kernel(record)
    return record


async def fake_worker(kb: Bus, kernel_id: str, shutdowns: list[str]) -> None:
    """Answers ShutdownKernel like the owning worker: removes the record, replies ok."""

    async def on_cmd(msg: Msg) -> None:
        command = ShutdownKernel.model_validate_json(msg.data)
        shutdowns.append(command.reason)
        record = await kb.registry.get_kernel(kernel_id)
        await kb.registry.delete_kernel(kernel_id)
        await msg.respond(KernelReply(kernel=record).model_dump_json().encode())

    await kb.nc.subscribe(subjects.kernel_command(kernel_id), cb=on_cmd)
    await kb.nc.flush()


async def test_idle_kernel_is_culled_with_event(kb: Bus) -> None:
    record = await put_kernel(kb, "idle", idle=60)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    c = await culler(kb, culler_id="c1")
    assert await c.tick() == 1
    assert shutdowns == ["culled"]
    assert await kb.registry.get_kernel(record.id) is None
    await kb.publisher.flush()
    await until(lambda: len(kb.of(events.KERNEL_CULLED)) == 1)
    event = kb.of(events.KERNEL_CULLED)[0]
    assert (event["kernel_id"], event["reason"], event["culler_id"]) == (record.id, "idle", "c1")
    assert event["idle_seconds"] >= 60


@pytest.mark.parametrize(
    ("state", "idle", "connected", "overrides"),
    [
        ("idle", 1, False, {}),
        ("busy", 60, False, {}),
        ("idle", 60, True, {}),
        ("idle", 60, False, {"cull_idle_timeout": 0}),
        ("idle", 60, False, {"kernelspec_timeouts": {"python3": 3600}}),
        ("idle", -3600, False, {}),
    ],
    ids=["recent", "busy", "connected", "disabled", "spec-timeout", "future"],
)
async def test_spared_kernels_get_no_command(
    kb: Bus, state: ExecutionState, idle: float, connected: bool, overrides: dict[str, Any]
) -> None:
    record = await put_kernel(kb, state, idle=idle)
    if connected:
        await kb.registry.set_connections(record.id, "api-1", 1)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    c = await culler(kb, **overrides)
    assert await c.tick() == 0
    assert shutdowns == []
    assert await kb.registry.get_kernel(record.id) is not None
    leases = await Bucket.open(kb.nc, subjects.CULL_BUCKET)
    assert record.id not in await _keys(leases)


@pytest.mark.parametrize(
    ("state", "connected", "overrides"),
    [("busy", False, {"cull_busy": True}), ("idle", True, {"cull_connected": True})],
    ids=["cull_busy", "cull_connected"],
)
async def test_cull_busy_and_cull_connected(
    kb: Bus, state: ExecutionState, connected: bool, overrides: dict[str, Any]
) -> None:
    record = await put_kernel(kb, state, idle=60)
    if connected:
        await kb.registry.set_connections(record.id, "api-1", 2)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    assert await (await culler(kb, **overrides)).tick() == 1
    assert shutdowns == ["culled"]


async def test_two_replicas_cull_one_kernel_once(kb: Bus) -> None:
    records = [await put_kernel(kb, "idle", idle=60) for _ in range(4)]
    shutdowns: list[str] = []
    for record in records:
        await fake_worker(kb, record.id, shutdowns)
    a, b = await culler(kb, culler_id="ca"), await culler(kb, culler_id="cb")
    counts = await asyncio.gather(a.tick(), b.tick())
    assert sum(counts) == 4
    assert len(shutdowns) == 4
    await kb.publisher.flush()
    await until(lambda: len(kb.of(events.KERNEL_CULLED)) == 4)
    assert sorted(e["kernel_id"] for e in kb.of(events.KERNEL_CULLED)) == sorted(
        r.id for r in records
    )


async def test_activity_since_the_view_was_built_saves_the_kernel(kb: Bus) -> None:
    record = await put_kernel(kb, "idle", idle=60)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    c = await culler(kb)
    await c.refresh()
    await kb.registry.put_kernel(record.model_copy(update={"last_activity": utcnow()}))
    assert await c.consider(record.id, c.policy()) == 0
    assert shutdowns == []


async def test_kernel_leased_by_another_culler_is_left_alone(kb: Bus) -> None:
    record = await put_kernel(kb, "idle", idle=60)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    other = Leases(await Bucket.open(kb.nc, subjects.CULL_BUCKET), "someone-else")
    assert await other.take(record.id)
    assert await (await culler(kb)).tick() == 0
    assert shutdowns == []


async def test_stale_lease_is_swept_and_kernel_culled(kb: Bus) -> None:
    record = await put_kernel(kb, "idle", idle=60)
    shutdowns: list[str] = []
    await fake_worker(kb, record.id, shutdowns)
    kv = await Bucket.open(kb.nc, subjects.CULL_BUCKET)
    old = {"culler_id": "dead-culler", "taken_at": "2020-01-01T00:00:00.000000Z"}
    await kv.create(record.id, json.dumps(old).encode())
    await kv.create("garbage-lease", b"not json")
    assert await (await culler(kb)).tick() == 1
    assert shutdowns == ["culled"]
    assert "garbage-lease" not in await _keys(kv)


async def test_sweep_deletes_only_stale_leases(kb: Bus) -> None:
    kv = await Bucket.open(kb.nc, subjects.CULL_BUCKET)
    leases = Leases(kv, "sweeper")
    assert await leases.sweep(max_age=60) == 0  # an empty bucket is not an error
    assert await leases.take("fresh")
    assert await leases.take("released")
    await leases.release("released")
    old = {"culler_id": "dead-culler", "taken_at": "2020-01-01T00:00:00.000000Z"}
    await kv.create("stale", json.dumps(old).encode())
    assert await leases.sweep(max_age=60) == 1
    assert await _keys(kv) == ["fresh"]


async def test_failure_on_one_kernel_does_not_stop_the_tick(kb: Bus) -> None:
    broken = await put_kernel(kb, "idle", idle=60, worker_id="w-live")
    healthy = await put_kernel(kb, "idle", idle=60)
    await kb.registry.put_heartbeat(heartbeat("w-live"))

    async def on_broken(msg: Msg) -> None:
        await msg.respond(b"not a reply")

    await kb.nc.subscribe(subjects.kernel_command(broken.id), cb=on_broken)
    shutdowns: list[str] = []
    await fake_worker(kb, healthy.id, shutdowns)
    assert await (await culler(kb)).tick() == 1
    assert await kb.registry.get_kernel(healthy.id) is None
    assert await kb.registry.get_kernel(broken.id) is not None


async def test_dead_kernel_of_a_gone_worker_is_removed_by_the_culler(
    kb: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    record = await put_kernel(kb, "dead", idle=0, worker_id="w-gone")
    assert await (await culler(kb)).tick() == 1
    assert await kb.registry.get_kernel(record.id) is None
    assert f"Culling 'dead' dead kernel 'python3' ({record.id})." in caplog.text
    await kb.publisher.flush()
    await until(lambda: len(kb.of(events.KERNEL_ACTIONS)) == 1)
    assert kb.of(events.KERNEL_ACTIONS)[0]["action"] == "shutdown"


def heartbeat(worker_id: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        max_kernels=8,
        running_kernels=1,
        kernelspecs=[],
        started_at=utcnow(),
        hostname="host-x",
    )


async def test_lost_worker_reported_once_and_its_kernels_marked_dead(kb: Bus) -> None:
    await kb.registry.put_heartbeat(heartbeat("w-lost"))
    mine = [await put_kernel(kb, "idle", idle=0, worker_id="w-lost") for _ in range(2)]
    other = await put_kernel(kb, "idle", idle=0, worker_id="w-other")
    await kb.registry.put_heartbeat(heartbeat("w-other"))
    kv = await Bucket.open(kb.nc, subjects.CULL_BUCKET)
    statuses: list[bytes] = []

    async def on_iopub(msg: Msg) -> None:
        statuses.append(msg.data)

    await kb.nc.subscribe(subjects.kernel_iopub(mine[0].id), cb=on_iopub)
    handlers = [
        WorkerLossHandler(kb.nc, kb.registry, Leases(kv, f"c{i}"), kb.publisher) for i in (1, 2)
    ]
    for h in handlers:
        assert await h.check() == []
    await kb.registry.remove_worker("w-lost")  # as if its heartbeat aged out
    for _ in range(2):
        await asyncio.gather(*(h.check() for h in handlers))
    for record in mine:
        fresh = await kb.registry.get_kernel(record.id)
        assert fresh is not None and fresh.execution_state == "dead"
        assert fresh.reason == "worker w-lost lost"
    await until(lambda: len(statuses) == 1)
    channel, parts = unpack_v1(statuses[0])
    assert channel == "iopub" and json.loads(parts[3]) == {"execution_state": "dead"}
    still = await kb.registry.get_kernel(other.id)
    assert still is not None and still.execution_state == "idle"
    await kb.publisher.flush()
    await until(lambda: len(kb.of(events.WORKER_LOST)) >= 1)
    lost = kb.of(events.WORKER_LOST)
    assert len(lost) == 1
    assert lost[0]["hostname"] == "host-x"
    assert sorted(lost[0]["kernel_ids"]) == sorted(r.id for r in mine)


async def test_cleanly_stopped_worker_is_not_lost(kb: Bus) -> None:
    await kb.registry.put_heartbeat(heartbeat("w-clean"))
    record = await put_kernel(kb, "idle", idle=0, worker_id="w-clean")
    kv = await Bucket.open(kb.nc, subjects.CULL_BUCKET)
    handler = WorkerLossHandler(kb.nc, kb.registry, Leases(kv, "c1"), kb.publisher)
    await handler.check()
    await kb.registry.remove_worker("w-clean")
    handler.tracker.note_stopped("w-clean")
    for _ in range(3):
        assert await handler.check() == []
    fresh = await kb.registry.get_kernel(record.id)
    assert fresh is not None and fresh.execution_state == "idle"


async def _keys(kv: Bucket) -> list[str]:
    """Live keys only: `keys()` lists purged ones too (their subject still holds a marker)."""
    return [key for key in await kv.keys() if await kv.get(key) is not None]
