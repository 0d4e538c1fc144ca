"""A worker kernel's lifecycle state (pure transitions, and as `ManagedKernel` applies them)
and its record's unsaved mark, which only `KernelRecords` clears. No process, no ZMQ, no
NATS: the kernel manager is built but never started, the registry is a stand-in."""

from __future__ import annotations

import json
from typing import cast

import pytest
from worker_unit_support import unbridged_kernel

from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus_worker.lifecycle import TRANSITIONS, Lifecycle, LifecycleError, check_transition
from kernelbus_worker.records import KernelRecords

L = Lifecycle


class FakeRegistry:
    def __init__(self) -> None:
        self.written: list[KernelRecord] = []
        self.fail = False

    async def put_kernel(self, record: KernelRecord, bound: float | None = None) -> None:
        if self.fail:
            raise TimeoutError("no JetStream leader")
        self.written.append(record.model_copy())


kernel = unbridged_kernel


def records() -> tuple[KernelRecords, FakeRegistry]:
    fake = FakeRegistry()
    return KernelRecords(cast(Registry, fake)), fake


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (L.STARTING, L.RESTARTING),
        (L.RUNNING, L.STARTING),
        (L.RUNNING, L.RUNNING),
        (L.DEAD, L.RUNNING),
        (L.DEAD, L.DEAD),
        (L.SHUTTING_DOWN, L.RESTARTING),
        (L.SHUTTING_DOWN, L.RUNNING),
        (L.SHUTTING_DOWN, L.DEAD),
    ],
)
def test_refused_transitions(current: Lifecycle, new: Lifecycle) -> None:
    with pytest.raises(LifecycleError, match=f"{current.value}.*{new.value}"):
        check_transition(current, new)


def test_every_state_has_its_transitions_and_only_restart_and_shutdown_are_in_transition() -> None:
    assert set(TRANSITIONS) == set(Lifecycle)
    assert {s for s in Lifecycle if s.in_transition} == {L.RESTARTING, L.SHUTTING_DOWN}
    for current, allowed in TRANSITIONS.items():
        for new in allowed:
            check_transition(current, new)


def test_a_kernel_starts_unsaved_and_runs_once_registered() -> None:
    k = kernel()
    assert k.state is L.STARTING and k.unsaved
    k.registered()
    assert k.state is L.RUNNING


def test_a_restart_ends_running_or_dead_as_the_record_says() -> None:
    k = kernel()
    k.registered()
    k.restart_began()
    assert k.state.in_transition
    k.restart_ended()
    assert k.state is L.RUNNING
    k.declared_dead("Kernel died (exit code 1)")
    assert (k.state, k.record.execution_state, k.record.reason) == (
        L.DEAD,
        "dead",
        "Kernel died (exit code 1)",
    )
    k.restart_began()  # a dead kernel may be restarted by a client
    k.restart_ended()  # ...and the restart failed before the process came back
    assert k.state is L.DEAD


def test_an_automatic_restart_that_declares_the_kernel_dead_leaves_it_dead() -> None:
    k = kernel()
    k.registered()
    k.restart_began()
    k.declared_dead("Kernel restart failed")
    k.restart_ended()
    assert k.state is L.DEAD


def test_a_shutdown_during_a_restart_keeps_the_kernel_and_refuses_further_restarts() -> None:
    k = kernel()
    k.registered()
    k.restart_began()
    k.shutdown_began()
    k.restart_ended()
    assert k.state is L.SHUTTING_DOWN
    with pytest.raises(LifecycleError):
        k.restart_began()
    k.shutdown_began()  # a second shutdown goes on as the first


async def test_a_save_clears_the_mark_and_a_failed_one_keeps_it() -> None:
    k = kernel()
    store, fake = records()
    await store.save(k)
    assert not k.unsaved and [r.id for r in fake.written] == ["k1"]
    k.record_changed()
    fake.fail = True
    with pytest.raises(TimeoutError):
        await store.save(k)
    assert k.unsaved  # written by a later flush, not forgotten


async def test_only_changed_records_of_settled_kernels_are_flushed() -> None:
    k = kernel()
    store, fake = records()
    k.registered()
    assert await store.save_changed(k)
    assert not await store.save_changed(k)  # unchanged
    k.record_changed()
    k.restart_began()
    assert not await store.save_changed(k)  # the restart writes it when it ends
    k.restart_ended()
    assert await store.save_changed(k)
    assert len(fake.written) == 2


def status(state: str, parent_type: str) -> list[bytes]:
    header = {"msg_id": "m", "msg_type": "status"}
    parent = {"msg_id": "p", "msg_type": parent_type}
    return [json.dumps(x).encode() for x in (header, parent, {}, {"execution_state": state})]


def test_iopub_seen_by_the_bridge_updates_the_record_and_marks_it_unsaved() -> None:
    k = kernel()
    k.take_unsaved()
    before = k.record.last_activity
    k.bridge._observe(status("busy", "execute_request"))
    assert k.record.execution_state == "busy" and k.unsaved
    assert k.record.last_activity >= before


def test_a_restarting_or_dead_record_keeps_its_state_against_iopub() -> None:
    k = kernel()
    k.record.execution_state = "restarting"
    k.bridge._observe(status("busy", "execute_request"))
    assert k.record.execution_state == "restarting"
