"""The api's read-your-writes notes (ADR 0023) and the last-good listing: pure logic, with a
clock the test moves."""

from __future__ import annotations

import pytest

from kernelbus.bounded import LastGood
from kernelbus.errors import BusTimeout, BusUnavailable
from kernelbus.models import KernelRecord
from kernelbus.registryview import KernelSummary
from kernelbus_api.recent import GONE, RecentWrites


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(kernel_id: str) -> KernelRecord:
    return KernelRecord(id=kernel_id, name="python3", worker_id="w1")


def summary(kernel_id: str) -> KernelSummary:
    return KernelSummary.of(record(kernel_id))


def test_a_started_kernel_is_served_until_the_view_holds_it() -> None:
    recent = RecentWrites(keep=60, clock=Clock())
    recent.started(record("new"))
    found = recent.lookup("new", viewed=False)
    assert isinstance(found, KernelRecord) and found.id == "new"
    assert recent.lookup("new", viewed=None) is not None  # no view: the note stands
    assert recent.lookup("new", viewed=True) is None  # the registry has it: ask it
    assert recent.lookup("new", viewed=False) is None  # and the note is gone
    assert len(recent) == 0


def test_a_kernel_shut_down_is_gone_until_the_view_drops_it() -> None:
    recent = RecentWrites(keep=60, clock=Clock())
    recent.started(record("k"))
    recent.removed("k")
    assert recent.lookup("k", viewed=True) is GONE
    assert recent.lookup("k", viewed=None) is GONE
    assert recent.lookup("k", viewed=False) is GONE  # the view dropped it too
    assert recent.lookup("k", viewed=True) is None  # the note ended with the view's drop


def test_notes_expire() -> None:
    clock = Clock()
    recent = RecentWrites(keep=60, clock=clock)
    recent.started(record("a"))
    recent.removed("b")
    clock.now += 60
    assert recent.lookup("a", viewed=False) is None
    assert recent.lookup("b", viewed=True) is None
    assert len(recent) == 0


def test_the_listing_adds_started_kernels_and_leaves_out_removed_ones() -> None:
    recent = RecentWrites(keep=60, clock=Clock())
    recent.started(record("new"))
    recent.removed("old")
    listed = recent.overlay([summary("old"), summary("other")])
    assert [s.id for s in listed] == ["other", "new"]
    # The registry caught up: the notes end, the registry's entries are served as they are.
    caught_up = [summary("other"), summary("new")]
    assert recent.overlay(caught_up) == caught_up
    assert len(recent) == 0


def test_a_start_after_a_shutdown_of_the_same_id_is_listed() -> None:
    recent = RecentWrites(keep=60, clock=Clock())
    recent.removed("k")
    recent.started(record("k"))
    assert [s.id for s in recent.overlay([])] == ["k"]


async def test_last_good_serves_a_recent_listing_when_the_next_gets_no_answer() -> None:
    clock = Clock()
    seen: LastGood[list[str]] = LastGood(keep=10, clock=clock)
    answers: list[list[str] | Exception] = [["w1"], BusTimeout("no leader"), ["w2"]]

    async def fetch() -> list[str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await seen.get(fetch) == ["w1"]
    clock.now += 5
    assert await seen.get(fetch) == ["w1"]  # no answer: the last one
    assert await seen.get(fetch) == ["w2"]


async def test_last_good_without_a_recent_listing_raises() -> None:
    clock = Clock()
    seen: LastGood[list[str]] = LastGood(keep=10, clock=clock)
    calls = 0

    async def fetch() -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise BusUnavailable("no leader")
        return ["w1"]

    assert await seen.get(fetch) == ["w1"]
    clock.now += 11  # too old to serve
    with pytest.raises(BusUnavailable):
        await seen.get(fetch)
