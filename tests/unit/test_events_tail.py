"""The live tail fans events out and drops a subscriber that cannot keep up."""

from __future__ import annotations

from kernelbus_events.store import StoredEvent
from kernelbus_events.streaming import format_sse
from kernelbus_events.tail import Tail


def _event(seq: int) -> StoredEvent:
    return StoredEvent(seq, f"e{seq}", None, {"__timestamp__": "2026-11-21T22:00:00Z"})


def test_every_subscriber_gets_every_event() -> None:
    tail = Tail()
    a, b = tail.subscribe(), tail.subscribe()
    tail.publish(_event(1))
    assert a.get_nowait() == b.get_nowait() == _event(1)


def test_a_slow_subscriber_is_ended_not_waited_for() -> None:
    tail = Tail(max_pending=2)
    slow, fast = tail.subscribe(), tail.subscribe()
    tail.publish(_event(1))
    fast.get_nowait()
    tail.publish(_event(2))
    fast.get_nowait()
    tail.publish(_event(3))
    assert fast.get_nowait() == _event(3)
    assert [slow.get_nowait() for _ in range(3)] == [_event(1), _event(2), None]
    tail.publish(_event(4))
    assert slow.empty()


def test_sse_frames_carry_the_sequence_as_id() -> None:
    frame = format_sse(_event(7)).decode()
    assert frame.startswith("id: 7\nevent: event\ndata: {")
    assert frame.endswith("\n\n")
