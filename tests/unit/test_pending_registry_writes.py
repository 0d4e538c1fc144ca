"""A worker's registry writes on a REST path are bounded (ADR 0023): a put JetStream does not
take in time stays marked unsaved for the activity flush, a delete joins the pending deletes
the flush retries, and a kernel started again under the same id is not deleted after all.
No process, no NATS: the registry is a stand-in that answers or stays silent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from worker_unit_support import unbridged_kernel

from kernelbus.bounded import within
from kernelbus.errors import BusTimeout, BusUnavailable, KernelbusError
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus_worker.records import KernelRecords


class ElectingRegistry:
    """Answers at once while it has a leader; without one, a call hangs until its bound (as
    JetStream does) or, unbounded, fails as `BusUnavailable`."""

    def __init__(self) -> None:
        self.leader = True
        self.records: dict[str, KernelRecord] = {}
        self.other_error = False

    async def _leaderless(self, bound: float | None) -> None:
        if self.other_error:
            raise KernelbusError("message bus error: something else")
        if self.leader:
            return
        if bound is None:
            raise BusUnavailable("JetStream is not answering")
        await within(asyncio.Event().wait(), bound)

    async def put_kernel(self, record: KernelRecord, bound: float | None = None) -> int:
        await self._leaderless(bound)
        self.records[record.id] = record.model_copy()
        return len(self.records)

    async def delete_kernel(self, kernel_id: str, bound: float | None = None) -> None:
        await self._leaderless(bound)
        self.records.pop(kernel_id, None)


kernel = unbridged_kernel


def records() -> tuple[KernelRecords, ElectingRegistry]:
    fake = ElectingRegistry()
    return KernelRecords(cast(Registry, fake), "w1", bound=0.01), fake


async def test_a_put_without_a_leader_is_kept_and_the_flush_writes_it() -> None:
    store, fake = records()
    k = kernel()
    k.registered()
    fake.leader = False
    assert await store.save_or_keep(k) is False
    assert k.unsaved and "k1" not in fake.records
    with pytest.raises(BusUnavailable):
        await store.save_changed(k)  # the flush, still no leader: still unsaved
    assert k.unsaved
    fake.leader = True
    assert await store.save_changed(k) is True
    assert not k.unsaved and fake.records["k1"].id == "k1"


async def test_a_put_with_a_leader_is_written_at_once() -> None:
    store, fake = records()
    k = kernel()
    assert await store.save_or_keep(k) is True
    assert not k.unsaved and "k1" in fake.records


async def test_other_registry_errors_still_fail_the_write() -> None:
    store, fake = records()
    k = kernel()
    fake.other_error = True
    with pytest.raises(KernelbusError):
        await store.save_or_keep(k)
    assert k.unsaved


async def test_a_delete_without_a_leader_is_pending_until_the_flush_removes_it() -> None:
    store, fake = records()
    k = kernel()
    await store.save(k)
    fake.leader = False
    assert await store.delete("k1") is False
    assert store.pending_deletes == {"k1"} and "k1" in fake.records
    with pytest.raises(BusUnavailable):
        await store.flush_pending()
    assert store.pending_deletes == {"k1"}
    fake.leader = True
    await store.flush_pending()
    assert not store.pending_deletes and "k1" not in fake.records


async def test_a_delete_with_a_leader_is_done_at_once() -> None:
    store, fake = records()
    await store.save(kernel())
    assert await store.delete("k1") is True
    assert not store.pending_deletes and not fake.records


async def test_a_kernel_started_again_under_its_id_is_not_deleted_by_the_flush() -> None:
    store, fake = records()
    fake.leader = False
    assert await store.delete("k1") is False
    fake.leader = True
    again = kernel("k1")
    await store.save(again)
    await store.flush_pending()
    assert "k1" in fake.records


async def test_within_turns_a_wait_past_its_bound_into_a_bus_timeout() -> None:
    with pytest.raises(BusTimeout):
        await within(asyncio.Event().wait(), 0.01)
    assert await within(asyncio.sleep(0, "done"), 1) == "done"


async def test_a_kept_record_is_in_the_runtime_dir_until_the_registry_has_it(
    tmp_path: Path,
) -> None:
    fake = ElectingRegistry()
    store = KernelRecords(cast(Registry, fake), "w1", bound=0.01, pending_dir=tmp_path)
    k = kernel()
    fake.leader = False
    await store.save_or_keep(k)
    # What a successor with the same worker id reads after a crash (another id: nothing).
    successor = KernelRecords(cast(Registry, fake), "w1", pending_dir=tmp_path)
    assert [r.id for r in successor.kept()] == ["k1"]
    assert KernelRecords(cast(Registry, fake), "w2", pending_dir=tmp_path).kept() == []
    fake.leader = True
    await store.save_changed(k)
    assert successor.kept() == []


async def test_a_pending_delete_is_noted_in_the_runtime_dir_until_done(tmp_path: Path) -> None:
    fake = ElectingRegistry()
    store = KernelRecords(cast(Registry, fake), "w1", bound=0.01, pending_dir=tmp_path)
    k = kernel()
    fake.leader = False
    await store.save_or_keep(k)
    await store.delete("k1")
    successor = KernelRecords(cast(Registry, fake), "w1", pending_dir=tmp_path)
    assert successor.kept() == []  # shut down: nothing to re-adopt
    assert successor.kept_deletes() == {"k1"}
    assert KernelRecords(cast(Registry, fake), "w2", pending_dir=tmp_path).kept_deletes() == set()
    fake.leader = True
    await store.flush_pending()
    assert successor.kept_deletes() == set()
