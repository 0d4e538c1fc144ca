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


# --- the liveness probe (ADR 0016) ----------------------------------------------------------


def test_no_responder_for_the_grace_is_lost_before_the_heartbeat_expires() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1"), hb("w2")], [])
    assert tracker.candidates() == ["w1", "w2"]
    tracker.probed("w1", False, now=100.0)
    tracker.probed("w2", True, now=100.0)
    assert tracker.disconnected(grace=4, now=103.9) == []
    tracker.probed("w1", False, now=104.0)
    lost = tracker.disconnected(grace=4, now=104.0)
    assert [(w.worker_id, w.last_heartbeat is not None) for w in lost] == [("w1", True)]


def test_an_answer_or_a_slow_probe_ends_the_run_and_an_unknown_one_does_not() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.probed("w1", False, now=0.0)
    tracker.probed("w1", None, now=3.0)  # the culler could not tell: the run goes on
    assert [w.worker_id for w in tracker.disconnected(grace=4, now=4.0)] == ["w1"]
    tracker.probed("w1", True, now=4.5)  # answered (or timed out: someone is subscribed)
    assert tracker.disconnected(grace=4, now=9.0) == []
    tracker.probed("w1", False, now=9.0)  # a new run starts from here
    assert tracker.disconnected(grace=4, now=12.0) == []


def test_a_cleanly_stopped_or_unknown_worker_is_not_lost_by_the_probe() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.probed("w1", False, now=0.0)
    tracker.note_stopped("w1")
    assert tracker.candidates() == []
    assert tracker.disconnected(grace=1, now=10.0) == []
    tracker.probed("never-seen", False, now=0.0)
    assert tracker.disconnected(grace=1, now=10.0) == []


def test_an_outage_resets_the_runs() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [])
    tracker.probed("w1", False, now=0.0)
    tracker.outage()
    tracker.probed("w1", False, now=10.0)
    assert tracker.disconnected(grace=4, now=12.0) == []


def test_a_handled_worker_is_not_revived_by_its_lingering_heartbeat() -> None:
    tracker = WorkerTracker()
    last = hb("w1")
    tracker.check([last], ["w1"])
    tracker.probed("w1", False, now=0.0)
    assert [w.worker_id for w in tracker.disconnected(grace=4, now=4.0)] == ["w1"]
    tracker.forget("w1")
    # Its heartbeat lingers in the bucket until the TTL; its kernels are `dead` now.
    assert tracker.check([last], []) == []
    assert tracker.candidates() == []
    assert tracker.check([last], []) == []
    # Aged out: nothing; and a new start with the same id is a new worker, tracked again.
    assert tracker.check([], []) == []
    again = last.model_copy(update={"started_at": datetime(2026, 11, 23, tzinfo=UTC)})
    tracker.check([again], [])
    assert tracker.candidates() == ["w1"]


def test_a_restarted_worker_with_the_same_id_is_tracked_at_once() -> None:
    tracker = WorkerTracker()
    last = hb("w1")
    tracker.check([last], [])
    tracker.probed("w1", False, now=0.0)
    tracker.disconnected(grace=1, now=1.0)
    tracker.forget("w1")
    again = last.model_copy(update={"started_at": datetime(2026, 11, 23, tzinfo=UTC)})
    assert tracker.check([again], []) == []
    assert tracker.candidates() == ["w1"]


def test_a_worker_whose_host_answers_is_not_lost_by_its_heartbeat_until_the_allowance() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [], now=0.0)
    tracker.probed("w1", True, now=1.0)  # the init answers while the worker restarts
    assert tracker.check([], [], now=12.0) == []
    tracker.probed("w1", True, now=13.0)
    assert tracker.check([], [], now=14.0) == []
    tracker.probed("w1", True, now=70.0)
    # Without a heartbeat for longer than any restart: lost although the host answers.
    assert [w.worker_id for w in tracker.check([], [], now=72.5)] == ["w1"]


def test_a_stale_answer_does_not_keep_a_worker() -> None:
    tracker = WorkerTracker()
    tracker.check([hb("w1")], [], now=0.0)
    tracker.probed("w1", True, now=1.0)
    tracker.check([], [], now=12.0)
    assert [w.worker_id for w in tracker.check([], [], now=14.0)] == ["w1"]
