"""Pure logic of NATS-outage handling: bus connectivity, the worker's hold, the culler's gate."""

from __future__ import annotations

import asyncio

from kernelbus.bus import Connectivity
from kernelbus_culler.service import BusGate
from kernelbus_culler.workers import WorkerTracker
from kernelbus_worker.routing import Hold


async def test_connectivity_follows_callbacks_and_runs_hooks() -> None:
    seen: list[str] = []

    async def lost() -> None:
        seen.append("lost")

    async def back() -> None:
        raise RuntimeError("a failing hook is logged, not raised")

    c = Connectivity(connected_since=100.0, on_disconnected=[lost], on_reconnected=[back])
    assert c.steady_for(10, now=110.0) and not c.steady_for(10, now=109.0)
    await c.lost()
    await c.lost()  # nats-py may report twice: counted once
    assert (c.connected, c.outages, seen, c.down.is_set()) == (False, 1, ["lost"], True)
    assert "not connected to NATS" in c.reason()
    assert not c.steady_for(0)
    await c.regained()
    assert c.connected and not c.down.is_set() and c.reason() == ""
    await asyncio.sleep(0)


def test_hold_sends_each_connection_its_share_in_order_once() -> None:
    hold = Hold({"a": 0, "b": 0}, max_messages=100, max_bytes=10_000)
    hold.add(None, b"1")
    hold.add("a", b"reply-a")
    hold.add("b", b"reply-b")
    assert hold.take("a") == [b"1", b"reply-a"]
    hold.add(None, b"2")
    assert hold.take("a") == [b"2"]
    assert hold.take("a") == []
    hold.release("a")
    assert not hold.waiting_for("a") and hold.waiting
    assert hold.abandon("b") == [b"1", b"reply-b", b"2"]
    assert not hold.waiting and hold.abandon("b") == []


def test_hold_transfers_to_a_new_connection_of_the_same_session() -> None:
    hold = Hold({"old": 0}, max_messages=100, max_bytes=10_000)
    hold.add("old", b"reply")
    hold.add(None, b"out")
    hold.transfer("old", "new")
    assert hold.take("new") == [b"reply", b"out"]


def test_hold_is_bounded_oldest_first() -> None:
    hold = Hold({"a": 0}, max_messages=2, max_bytes=10_000)
    for frame in (b"1", b"2", b"3"):
        hold.add(None, frame)
    assert hold.dropped == 1
    assert hold.take("a") == [b"2", b"3"]


def test_culler_gate_judges_workers_only_after_a_steady_ttl() -> None:
    c = Connectivity(connected_since=0.0)
    gate = BusGate(c, settle=10)
    c.connected_since = None
    assert not gate.workers()
    assert gate.culling()  # no outage yet: culling is not held back at start
    c.outages = 1
    assert not gate.culling()
    c.connected_since = -100.0
    assert gate.workers() and gate.culling()


def test_an_outage_resets_absences_seen_before_it() -> None:
    tracker = WorkerTracker()
    tracker.check([], ["w1"])  # absent once
    tracker.outage()
    assert tracker.check([], ["w1"]) == []  # once again, not twice in a row
