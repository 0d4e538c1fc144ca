"""The api's pending session writes and read-your-writes notes (ADR 0023): pure logic, with a
clock the test moves."""

from __future__ import annotations

from kernelbus_api.sessionwrites import GONE, SessionWrites


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_write_is_pending_until_it_lands_and_served_meanwhile() -> None:
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=Clock())
    token = writes.note("s1", "v1")
    assert writes.pending() == [("s1", "v1", token)]
    assert writes.lookup("s1") == "v1"
    assert writes.overlay({"s0": "old"}) == {"s0": "old", "s1": "v1"}
    writes.landed("s1", token)
    assert writes.pending() == []
    assert writes.lookup("s1") == "v1"


def test_a_later_write_of_a_session_supersedes_the_pending_one() -> None:
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=Clock())
    first = writes.note("s1", "v1")
    writes.note("s2", "x")
    second = writes.note("s1", GONE)
    # Only the latest write of s1 is kept, and it goes after s2's (write order).
    assert writes.pending() == [("s2", "x", 2), ("s1", GONE, second)]
    writes.landed("s1", first)  # an earlier write landing does not end the later one
    assert [key for key, _, _ in writes.pending()] == ["s2", "s1"]
    assert writes.lookup("s1") is GONE
    assert writes.overlay({"s1": "v0"}) == {"s2": "x"}


def test_a_delete_hides_the_session_from_a_stale_listing() -> None:
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=Clock())
    writes.note("s1", GONE)
    assert writes.overlay({"s1": "v1", "s2": "v2"}, fetched_at=None) == {"s2": "v2"}


def test_a_pending_write_never_expires_nor_ends_with_a_fresh_listing() -> None:
    clock = Clock()
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=clock)
    token = writes.note("s1", "v1")
    clock.now += 3600
    assert writes.overlay({}, fetched_at=clock.now) == {"s1": "v1"}
    assert writes.pending() == [("s1", "v1", token)]


def test_a_note_ends_with_a_listing_fetched_after_its_write_landed() -> None:
    clock = Clock()
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=clock)
    token = writes.note("s1", "v1")
    writes.landed("s1", token)
    # A listing whose fetch began before the write landed may lack it: the note stays.
    assert writes.overlay({}, fetched_at=clock.now - 1) == {"s1": "v1"}
    # A kept listing (age unknown) keeps the note too.
    assert writes.overlay({}, fetched_at=None) == {"s1": "v1"}
    clock.now += 1
    # Fetched after it landed: KV's listing is the truth, another replica's later write too.
    assert writes.overlay({"s1": "v2"}, fetched_at=clock.now) == {"s1": "v2"}
    assert len(writes) == 0
    assert writes.lookup("s1") is None


def test_a_landed_note_expires_after_keep_seconds() -> None:
    clock = Clock()
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=clock)
    writes.landed("s1", writes.note("s1", "v1"))
    clock.now += 60
    assert writes.lookup("s1") == "v1"
    clock.now += 0.5
    assert writes.lookup("s1") is None
    assert writes.overlay({"s0": "x"}) == {"s0": "x"}


def test_a_failed_write_is_retracted_unless_it_landed_or_was_superseded() -> None:
    writes: SessionWrites[str] = SessionWrites(keep=60, clock=Clock())
    failed = writes.note("s1", "v1")
    writes.retract("s1", failed)
    assert writes.pending() == [] and writes.lookup("s1") is None
    first = writes.note("s1", "v1")
    second = writes.note("s1", "v2")
    writes.retract("s1", first)  # superseded already: the later write stays
    assert writes.pending() == [("s1", "v2", second)]
    writes.landed("s1", second)
    writes.retract("s1", second)  # it landed: KV has it, the note stays
    assert writes.lookup("s1") == "v2"
