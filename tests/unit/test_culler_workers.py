"""Worker-loss detection: absent twice, not stopped cleanly, known from heartbeat or kernels."""

from __future__ import annotations

from datetime import UTC, datetime

from kernelbus.models import WorkerHeartbeat
from kernelbus_culler.workers import WorkerTracker


def hb(worker_id: str) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        max_kernels=4,
        running_kernels=1,
        kernelspecs=[],
        started_at=datetime(2026, 11, 22, tzinfo=UTC),
        hostname="host-a",
    )


def test_live_worker_is_never_lost() -> None:
    tracker = WorkerTracker()
    for _ in range(3):
        assert tracker.check([hb("w1")], ["w1"]) == []


def test_vanished_worker_is_lost_on_second_absent_check() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    assert tracker.check([], []) == []
    lost = tracker.check([], [])
    assert [w.worker_id for w in lost] == ["w1"]
    assert lost[0].last_heartbeat is not None and lost[0].last_heartbeat.hostname == "host-a"


def test_cleanly_stopped_worker_is_not_lost() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.check([], [])
    tracker.note_stopped("w1")
    assert tracker.check([], []) == []
    assert tracker.check([], ["w1"]) == []


def test_worker_back_before_grace_is_not_lost() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.check([], [])
    assert tracker.check([hb("w1")], []) == []
    assert tracker.check([], []) == []


def test_owner_of_live_kernels_unseen_since_restart_is_lost() -> None:
    tracker = WorkerTracker()
    assert tracker.check([], ["w9"]) == []
    lost = tracker.check([], ["w9"])
    assert [(w.worker_id, w.last_heartbeat) for w in lost] == [("w9", None)]


def test_restarted_worker_clears_its_stopped_mark() -> None:
    tracker = WorkerTracker()
    tracker.note_stopped("w1")
    tracker.check([hb("w1")], [])
    tracker.check([], [])
    assert [w.worker_id for w in tracker.check([], [])] == ["w1"]


def test_forgotten_worker_is_not_reported_again() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.check([], [])
    tracker.check([], [])
    tracker.forget("w1")
    assert tracker.check([], []) == []
    assert tracker.check([], []) == []
