"""The worker's connection table (pure logic): attach/detach, replay buffers, reply targets,
the bus-outage hold and its catch-up; every step keeps the table's invariant (`check`)."""

from __future__ import annotations

import logging
import time

import pytest

from kernelbus_worker.connections import SESSION_HISTORY, ConnectionTable, Limits

LIMITS = Limits(
    replay_window=60, replay_max_messages=100, replay_max_bytes=1 << 20, recent_window=60
)


def table(limits: Limits = LIMITS) -> ConnectionTable:
    return ConnectionTable(limits, logging.getLogger("test"))


def test_the_last_detach_buffers_for_its_session_and_its_reattach_replays_in_order() -> None:
    t = table()
    assert t.attach("c1", "s1") == []
    t.note_iopub(b"live")
    t.detach("c1")
    t.check()
    assert t.buffer is not None and t.buffer.session_id == "s1"
    t.note_iopub(b"one")
    t.note_generated(b"two")
    assert t.attach("c2", "s1") == [b"one", b"two"]
    t.check()
    assert t.buffer is None and list(t.attached) == ["c2"]


def test_another_session_attaching_discards_the_buffer() -> None:
    t = table()
    t.attach("c1", "s1")
    t.detach("c1")
    t.note_iopub(b"for s1")
    assert t.attach("c2", "s2") == []
    t.check()
    assert t.buffer is None


def test_a_detach_while_others_stay_open_buffers_nothing() -> None:
    t = table()
    t.attach("c1", "s1")
    t.attach("c2", "s2")
    t.detach("c1")
    t.check()
    assert t.buffer is None and len(t) == 1


def test_no_replay_window_means_no_buffer() -> None:
    t = table(Limits(0, 100, 1 << 20, 60))
    t.attach("c1", "s1")
    t.detach("c1")
    t.note_iopub(b"x")
    assert t.buffer is None
    assert t.attach("c2", "s1") == []


def test_a_new_connection_of_a_session_replaces_the_stale_one() -> None:
    t = table()
    t.attach("old", "s1", "api-a")
    t.attach("new", "s1", "api-b")
    t.check()
    assert list(t.attached) == ["new"]
    assert t.attached["new"].api_instance == "api-b"


def test_the_same_connection_attaching_again_keeps_its_place() -> None:
    t = table()
    t.attach("c1", "s1", now=1.0)
    t.attach("c2", "s2", now=2.0)
    t.attach("c1", "s1", now=3.0)
    t.check()
    assert list(t.attached) == ["c1", "c2"]
    assert t.attached["c1"].attached_at == 3.0


def test_connections_without_a_session_never_replace_each_other() -> None:
    t = table()
    t.attach("c1", "")
    t.attach("c2", "")
    assert t.same_session("") == []
    assert list(t.attached) == ["c1", "c2"]


def test_a_reply_goes_to_its_connection_and_is_remembered_as_sent_to_it() -> None:
    t = table()
    t.attach("c1", "s1", now=0.0)
    t.attach("c2", "s2", now=0.0)
    assert t.reply_target("c1", b"reply") == "c1"
    assert t.sent_to("c1", 0.0) == [b"reply"]
    assert t.sent_to("c2", 0.0) == []


def test_a_reply_to_a_closed_connection_goes_to_its_sessions_newest_connection() -> None:
    t = table()
    t.attach("c1", "s1")
    t.attach("x", "s2")
    t.detach("c1")
    t.attach("c2", "s1")
    t.attach("c3", "s1")  # replaces c2
    assert t.reply_target("c1", b"reply") == "c3"


def test_a_reply_for_a_session_with_nobody_attached_is_buffered_for_it() -> None:
    t = table()
    t.attach("c1", "s1")
    t.detach("c1")
    assert t.reply_target("c1", b"reply") is None
    assert t.attach("c2", "s1") == [b"reply"]


def test_a_reply_for_another_sessions_closed_connection_is_dropped() -> None:
    t = table()
    t.attach("c1", "s1")
    t.attach("c2", "s2")
    t.detach("c1")
    t.detach("c2")  # the buffer is s2's
    assert t.reply_target("c1", b"reply") is None
    assert t.attach("c3", "s2") == []


def test_a_reply_to_a_connection_never_seen_goes_to_it() -> None:
    """Attached to the kernel's previous worker: its api replica still listens for it."""
    t = table()
    assert not t.knows("theirs")
    assert t.reply_target("theirs", b"reply") == "theirs"


def test_the_session_history_is_bounded() -> None:
    t = table()
    for i in range(SESSION_HISTORY + 5):
        t.attach(f"c{i}", f"s{i}")
        t.detach(f"c{i}")
    assert not t.knows("c0") and t.knows(f"c{SESSION_HISTORY + 4}")
    t.check()


def test_a_lost_replica_owes_its_clients_session_what_was_sent_since_its_last_sign() -> None:
    t = table()
    base = time.monotonic()  # the buffer ages its frames against the clock when drained
    t.attach("c1", "s1", "api-a", now=base)
    t.attach("other", "s2", "api-b", now=base)
    t.recent.add(None, b"early", now=base + 1)
    t.recent.add(None, b"broadcast", now=base + 5)
    t.recent.add("c1", b"to c1", now=base + 6)
    t.recent.add("other", b"to other", now=base + 7)
    t.drop_lost(["c1"], since=base + 4)
    assert t.buffer is None  # "other" is still attached
    t.drop_lost(["other"], since=base + 4)
    t.check()
    assert t.attach("c9", "s2") == [b"broadcast", b"to other"]


def test_a_readopted_kernel_keeps_its_output_for_the_first_attach_of_any_session() -> None:
    """Its predecessor's clients are unknown here: whichever attaches first is owed it."""
    t = table()
    t.buffer_unclaimed()
    t.note_iopub(b"printed")
    assert t.reply_target("theirs", b"reply") == "theirs"  # still sent to its replica
    t.check()
    assert t.attach("c1", "any-session") == [b"printed", b"reply"]
    assert t.buffer is None
    t.buffer_unclaimed()  # attached: nothing to keep
    assert t.buffer is None


def test_frames_replayed_at_an_attach_are_owed_again_if_that_replica_dies() -> None:
    """The replay went to a replica that died before its client got it: the session's next
    connection is owed the replay too, then what followed, in order."""
    t = table()
    t.attach("c1", "s1", "api-a")
    t.detach("c1")
    t.note_iopub(b"one")
    t.note_iopub(b"two")
    before = time.monotonic()
    assert t.attach("c2", "s1", "api-a") == [b"one", b"two"]
    t.note_iopub(b"three")
    t.drop_lost(["c2"], since=before)
    t.check()
    assert t.attach("c3", "s1", "api-b") == [b"one", b"two", b"three"]


def test_during_an_outage_output_is_held_then_caught_up_in_order() -> None:
    t = table()
    t.attach("c1", "s1", "api-a", now=10.0)
    t.attach("c2", "s2", "api-a", now=10.0)
    t.recent.add(None, b"before", now=11.0)
    t.recent.add(None, b"acked", now=9.0)
    t.bus_lost({"api-a": 10.5})
    assert t.bus_down and t.waiting_for("c1") and t.waiting_for("c2")
    assert t.hold_frame(None, b"during") == []  # the bus is down: nobody directly
    assert t.hold_frame("c2", b"reply to c2") == []
    assert t.catch_up_batch("c1") == []  # not while down
    t.bus_back()
    t.check()
    assert t.begin_catch_up("c1")
    assert not t.begin_catch_up("c1")  # one catch-up per connection at a time
    assert t.catch_up_batch("c1") == [b"before", b"during"]
    # c2 is still owed its share: new output is held for it, sent to c1 only once c1 is done.
    assert t.hold_frame(None, b"next") == []
    assert t.catch_up_batch("c1") == [b"next"]
    assert t.catch_up_batch("c1") == []  # caught up: released
    t.end_catch_up("c1")
    assert not t.waiting_for("c1")
    assert t.hold_frame(None, b"after") == ["c1"]
    assert t.catch_up_batch("c2") == [b"before", b"during", b"reply to c2", b"next", b"after"]
    assert t.catch_up_batch("c2") == []
    assert t.hold is None
    t.check()


def test_a_connection_that_does_not_come_back_after_an_outage_is_owed_to_its_session() -> None:
    t = table()
    t.attach("c1", "s1", "api-a", now=0.0)
    t.bus_lost({})
    t.hold_frame(None, b"held")
    t.expire_hold()  # nothing while the bus is down
    assert t.waiting_for("c1")
    t.bus_back()
    t.expire_hold()
    t.check()
    assert t.hold is None and len(t) == 0
    assert t.attach("c2", "s1") == [b"held"]


def test_expiry_leaves_a_connection_that_is_being_caught_up() -> None:
    t = table()
    t.attach("c1", "s1", now=0.0)
    t.bus_lost({})
    t.bus_back()
    assert t.begin_catch_up("c1")
    t.expire_hold()
    assert t.waiting_for("c1") and len(t) == 1


def test_a_new_connection_of_the_session_takes_over_what_the_old_one_was_owed() -> None:
    t = table()
    t.attach("old", "s1", now=0.0)
    t.bus_lost({})
    t.hold_frame("old", b"reply to old")
    t.bus_back()
    t.attach("new", "s1")
    t.check()
    assert not t.waiting_for("old") and t.waiting_for("new")
    assert t.catch_up_batch("new") == [b"reply to old"]


def test_a_detach_during_a_hold_hands_its_share_to_the_sessions_buffer() -> None:
    t = table()
    t.attach("c1", "s1", now=0.0)
    t.bus_lost({})
    t.hold_frame(None, b"held")
    t.detach("c1")
    t.bus_back()
    t.check()
    assert t.hold is None
    assert t.attach("c2", "s1") == [b"held"]


def test_resume_holds_what_was_sent_to_a_connection_since_its_replica_was_last_seen() -> None:
    t = table()
    t.attach("c1", "s1", now=0.0)
    t.recent.add("c1", b"old", now=1.0)
    t.recent.add(None, b"missed", now=5.0)
    t.resume_for("c1", since=4.0)
    assert t.waiting_for("c1")
    t.resume_for("c1", since=0.0)  # a second resume while waiting changes nothing
    assert t.catch_up_batch("c1") == [b"missed"]
    assert t.catch_up_batch("c1") == []
    assert t.hold is None


def test_an_empty_hold_keeps_live_output_behind_what_is_owed() -> None:
    t = table()
    t.attach("c1", "s1", now=0.0)
    t.recent.add("c1", b"sent before", now=1.0)
    assert t.hold_for("c1")
    assert not t.hold_for("c1")  # already held for: nothing changes
    assert not t.hold_for("nobody")
    assert t.hold_frame(None, b"live") == []  # held for c1, which waits
    t.check()
    assert t.catch_up_batch("c1") == [b"live"]  # nothing sent before the hold is in it
    assert t.catch_up_batch("c1") == []
    assert t.hold is None


def test_resume_for_a_connection_not_attached_does_nothing() -> None:
    t = table()
    t.resume_for("nobody", since=0.0)
    assert t.hold is None


def test_check_reports_a_broken_invariant() -> None:
    t = table()
    t.attach("c1", "s1")
    t._sessions["c1"] = "another"
    with pytest.raises(AssertionError):
        t.check()


def test_a_gone_kernel_keeps_no_frames() -> None:
    t = table()
    t.attach("c1", "s1")
    t.note_iopub(b"sent")
    t.detach("c1")
    t.note_iopub(b"buffered")
    t.drop_frames()
    t.check()
    assert t.buffer is None and t.hold is None and t.sent_to("c1", 0.0) == []
