"""The culler's view: registry records made fresher by activity events, never resurrected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kernelbus.models import ExecutionState, KernelRecord
from kernelbus_culler.view import Activity, KernelView

T0 = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
KID = "4db5d35c-712c-4b42-a85b-0c07964f8e3f"


def record(state: ExecutionState = "idle", at: datetime = T0) -> KernelRecord:
    return KernelRecord(
        id=KID, name="python3", worker_id="w1", execution_state=state, last_activity=at
    )


def test_snapshot_of_unknown_kernel_is_none() -> None:
    assert KernelView().snapshot(KID) is None


def test_newer_event_wins_over_record() -> None:
    view = KernelView()
    view.refresh([record("idle")], {KID: 1})
    view.apply(KID, Activity("busy", T0 + timedelta(seconds=5)))
    snap = view.snapshot(KID)
    assert snap is not None
    assert (snap.execution_state, snap.last_activity, snap.connections) == (
        "busy",
        T0 + timedelta(seconds=5),
        1,
    )


def test_older_event_loses_to_record() -> None:
    view = KernelView()
    view.refresh([record("idle", T0)], {})
    view.apply(KID, Activity("busy", T0 - timedelta(seconds=5)))
    snap = view.snapshot(KID)
    assert snap is not None and snap.execution_state == "idle"
    assert snap.connections == 0


def test_out_of_order_events_keep_newest() -> None:
    view = KernelView()
    view.refresh([record("idle", T0)], {})
    view.apply(KID, Activity("idle", T0 + timedelta(seconds=9)))
    view.apply(KID, Activity("busy", T0 + timedelta(seconds=3)))
    snap = view.snapshot(KID)
    assert snap is not None and snap.execution_state == "idle"
    assert snap.last_activity == T0 + timedelta(seconds=9)


def test_dead_record_is_not_resurrected_by_event() -> None:
    view = KernelView()
    view.refresh([record("dead", T0)], {})
    view.apply(KID, Activity("idle", T0 + timedelta(seconds=60)))
    snap = view.snapshot(KID)
    assert snap is not None and snap.execution_state == "dead"


def test_unknown_connection_counts_stay_unknown() -> None:
    view = KernelView()
    view.refresh([record()], None)
    snap = view.snapshot(KID)
    assert snap is not None and snap.connections is None


def test_refresh_forgets_kernels_that_are_gone() -> None:
    view = KernelView()
    view.refresh([record()], {})
    view.apply(KID, Activity("idle", T0))
    view.refresh([], {})
    assert view.snapshot(KID) is None and view.activity == {}


def test_activity_from_event_parses_jupyter_time() -> None:
    activity = Activity.from_event(
        {"execution_state": "idle", "last_activity": "2026-11-22T12:00:00.000000Z"}
    )
    assert activity.last_activity == T0
    with pytest.raises(ValueError):
        Activity.from_event({"execution_state": "idle", "last_activity": "yesterday"})
