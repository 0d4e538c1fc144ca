"""Least-loaded placement among live workers."""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack

import pytest

from kernelbus.errors import NoSuchKernelspec, NoWorkerAvailable
from kernelbus.models import KernelspecInfo, WorkerHeartbeat
from kernelbus.timefmt import utcnow
from kernelbus_api.placement import Placements, choose_worker


def _worker(
    wid: str, max_kernels: int, running: int, specs: tuple[str, ...] = ("python3",)
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=wid,
        max_kernels=max_kernels,
        running_kernels=running,
        kernelspecs=[KernelspecInfo(name=s, spec={}) for s in specs],
        started_at=utcnow(),
    )


def test_most_free_slots_wins() -> None:
    workers = [_worker("a", 4, 3), _worker("b", 10, 2), _worker("c", 5, 0)]
    assert choose_worker(workers, "python3").worker_id == "b"


def test_only_workers_with_the_spec_are_considered() -> None:
    workers = [_worker("a", 10, 0, ("r",)), _worker("b", 2, 1)]
    assert choose_worker(workers, "python3").worker_id == "b"


def test_ties_go_to_the_lowest_id() -> None:
    workers = [_worker("z", 4, 0), _worker("m", 4, 0)]
    assert choose_worker(workers, "python3").worker_id == "m"


def test_no_worker_is_unavailable() -> None:
    with pytest.raises(NoWorkerAvailable):
        choose_worker([], "python3")


def test_unknown_spec_on_every_worker() -> None:
    with pytest.raises(NoSuchKernelspec, match="No such kernel named nope"):
        choose_worker([_worker("a", 4, 0)], "nope")


def test_full_workers_are_unavailable() -> None:
    with pytest.raises(NoWorkerAvailable, match="full"):
        choose_worker([_worker("a", 2, 2), _worker("b", 1, 1)], "python3")


def test_a_warm_kernel_of_the_spec_beats_more_free_slots() -> None:
    warm = _worker("w", 4, 3).model_copy(update={"pooled_kernels": {"python3": 1}})
    other_spec_warm = _worker("x", 4, 3).model_copy(update={"pooled_kernels": {"r": 2}})
    workers = [_worker("a", 10, 0), warm, other_spec_warm]
    assert choose_worker(workers, "python3").worker_id == "w"
    assert choose_worker([_worker("a", 10, 0), other_spec_warm], "python3").worker_id == "a"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pooled(wid: str, pooled: int) -> WorkerHeartbeat:
    worker = _worker(wid, 32, pooled)
    return worker.model_copy(update={"pooled_kernels": {"python3": pooled}})


def test_a_burst_spreads_over_workers_between_heartbeats() -> None:
    """Six starts against one unchanged heartbeat snapshot (as between two heartbeats): 2/2/2,
    the warm kernels first. Before Placements, all six went to worker a."""
    placements = Placements(clock=_Clock())
    snapshot = [_pooled("a", 1), _pooled("b", 1), _pooled("c", 1)]
    chosen = []
    with ExitStack() as running:
        for _ in range(6):
            worker = placements.choose(snapshot, "python3")
            running.enter_context(placements.placed(worker.worker_id, "python3"))
            chosen.append(worker.worker_id)
    assert chosen[:3] == ["a", "b", "c"], "each warm kernel is used once"
    assert Counter(chosen) == {"a": 2, "b": 2, "c": 2}


def test_a_finished_start_counts_until_the_next_heartbeat_can_show_it() -> None:
    clock = _Clock()
    placements = Placements(settle=5.0, clock=clock)
    snapshot = [_worker("a", 4, 0), _worker("b", 4, 0)]
    with placements.placed("a", "python3"):
        pass
    assert placements.choose(snapshot, "python3").worker_id == "b"
    clock.now += 4.9
    assert placements.view(snapshot)[0].running_kernels == 1
    clock.now += 0.2
    assert placements.view(snapshot) == snapshot
    assert placements.choose(snapshot, "python3").worker_id == "a"


def test_pending_starts_order_the_workers_but_only_a_heartbeat_says_full() -> None:
    placements = Placements(clock=_Clock())
    snapshot = [_worker("a", 2, 0), _worker("b", 3, 2)]
    with placements.placed("a", "python3"), placements.placed("a", "python3"):
        # a looks full by this replica's count, b has a slot: b first.
        assert placements.choose(snapshot, "python3").worker_id == "b"
        # b gone: a is asked all the same (the worker itself refuses a start when full).
        assert placements.choose(snapshot[:1], "python3").worker_id == "a"
    with pytest.raises(NoWorkerAvailable, match="full"):
        placements.choose([_worker("a", 2, 2)], "python3")


def test_fast_starts_are_not_refused_while_heartbeats_catch_up() -> None:
    """19 warm starts within the settle time on a worker of 32 whose heartbeat already shows
    them: the view counts each twice (38 > 32), and the 20th start was refused as "full"
    (found by `bench/ab.py --clients 20`)."""
    clock = _Clock()
    placements = Placements(settle=5.0, clock=clock)
    for _ in range(19):
        with placements.placed("a", "python3"):
            clock.now += 0.2
    snapshot = [_worker("a", 32, 19)]
    assert placements.view(snapshot)[0].free_slots < 0
    assert placements.choose(snapshot, "python3").worker_id == "a"


def test_a_failed_start_stops_counting_at_once() -> None:
    placements = Placements(clock=_Clock())
    snapshot = [_worker("a", 1, 0)]
    with pytest.raises(RuntimeError), placements.placed("a", "python3"):
        raise RuntimeError("launch timeout")
    assert placements.choose(snapshot, "python3").worker_id == "a"
