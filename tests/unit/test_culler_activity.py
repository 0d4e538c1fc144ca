"""Events the culler consumes: validated with the schemas, invalid ones skipped harmlessly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_events.schema_registry import SchemaRegistry

from kernelbus import events
from kernelbus.schemas import event_registry
from kernelbus_culler.activity import EventSink, handle
from kernelbus_culler.view import Activity

KID = "4db5d35c-712c-4b42-a85b-0c07964f8e3f"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return event_registry()


class Recorder:
    def __init__(self) -> None:
        self.activity: list[tuple[str, Activity]] = []
        self.stopped: list[str] = []

    def sink(self) -> EventSink:
        return EventSink(lambda k, a: self.activity.append((k, a)), self.stopped.append)


def capsule(schema_id: str, **data: Any) -> bytes:
    envelope = {
        "__schema__": schema_id,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        "__timestamp__": "2026-11-22T12:00:00.000000Z",
    }
    return json.dumps({**envelope, **data}).encode()


ACTIVITY = {
    "kernel_id": KID,
    "kernel_name": "python3",
    "worker_id": "w1",
    "execution_state": "busy",
    "last_activity": "2026-11-22T12:00:01.000000Z",
    "connections": 1,
}


def test_valid_activity_reaches_the_view(registry: SchemaRegistry) -> None:
    rec = Recorder()
    assert handle(registry, rec.sink(), capsule(events.KERNEL_ACTIVITY, **ACTIVITY))
    assert len(rec.activity) == 1
    kernel_id, activity = rec.activity[0]
    assert kernel_id == KID and activity.execution_state == "busy"


def test_worker_stopped_reaches_the_tracker(registry: SchemaRegistry) -> None:
    rec = Recorder()
    raw = capsule(events.WORKER_STOPPED, worker_id="w1", hostname="h", max_kernels=2, kernel_ids=[])
    assert handle(registry, rec.sink(), raw)
    assert rec.stopped == ["w1"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        json.dumps(ACTIVITY).encode(),
        capsule(events.KERNEL_ACTIVITY, **{**ACTIVITY, "execution_state": "sleepy"}),
        capsule(events.KERNEL_ACTIVITY, **{**ACTIVITY, "last_activity": "2026-11-22 12:00"}),
        capsule(events.KERNEL_ACTIVITY, **{k: v for k, v in ACTIVITY.items() if k != "kernel_id"}),
        capsule("https://example.org/unknown/v1", **ACTIVITY),
        capsule(events.KERNEL_CULLED, kernel_id=KID, idle_seconds=1, reason="idle", culler_id="c"),
    ],
)
def test_invalid_or_foreign_events_change_nothing(registry: SchemaRegistry, raw: bytes) -> None:
    rec = Recorder()
    assert not handle(registry, rec.sink(), raw)
    assert rec.activity == [] and rec.stopped == []
