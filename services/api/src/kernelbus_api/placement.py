"""Which live worker starts a kernel: one with a warm kernel of the spec ready, else the one
with the spec and the most free slots.

Heartbeats arrive every couple of seconds, so a burst of starts would all see the same
snapshot and land on one worker. `Placements` remembers the starts this api replica placed
and counts them against their worker until a heartbeat taken after the start can show them.
That count spreads starts; it never refuses one. Only a worker's own heartbeat says it is full,
and only the worker refuses a start as full (`CapacityExceeded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kernelbus.errors import NoSuchKernelspec, NoWorkerAvailable
from kernelbus.models import WorkerHeartbeat

# Worker heartbeats are 2 s apart by default: a start finished SETTLE seconds ago is in one.
SETTLE = 5.0


def choose_worker(
    workers: list[WorkerHeartbeat], kernel_name: str, with_room: Collection[str] | None = None
) -> WorkerHeartbeat:
    """The least-loaded live worker that can run `kernel_name`.

    No live worker at all, or none with a free slot (by `with_room`, the ids of the workers
    that have one, if given) → `NoWorkerAvailable` (503, nothing was started, safe to retry).
    Live workers, none with the spec → `NoSuchKernelspec`.
    """
    if not workers:
        raise NoWorkerAvailable("no kernel worker is available; try again later")
    able = [w for w in workers if w.has_spec(kernel_name)]
    if not able:
        raise NoSuchKernelspec(f"No such kernel named {kernel_name}")
    if with_room is None:
        free = [w for w in able if w.free_slots > 0]
    else:
        free = [w for w in able if w.worker_id in with_room]
    if not free:
        raise NoWorkerAvailable(f"every kernel worker that runs {kernel_name} is full")
    # A pooled kernel starts in milliseconds; ties go to the lowest worker id (deterministic).
    return max(
        free,
        key=lambda w: (
            w.pooled_kernels.get(kernel_name, 0) > 0,
            w.free_slots,
            _reverse(w.worker_id),
        ),
    )


def _reverse(worker_id: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in worker_id)


@dataclass
class _Placed:
    worker_id: str
    kernel_name: str
    finished_at: float | None = None


@dataclass
class Placements:
    """Starts this replica placed that the workers' heartbeats may not show yet.

    A start counts against its worker (one slot, one pooled kernel of its spec) while it runs
    and for `settle` seconds after it finished, long enough for the worker's next heartbeat.
    Counting a start twice for a moment only spreads a burst a little more.
    """

    settle: float = SETTLE
    clock: Callable[[], float] = time.monotonic
    _placed: list[_Placed] = field(default_factory=list)

    def view(self, workers: list[WorkerHeartbeat]) -> list[WorkerHeartbeat]:
        """The heartbeats with this replica's unsettled starts applied."""
        now = self.clock()
        self._placed = [
            p for p in self._placed if p.finished_at is None or now - p.finished_at < self.settle
        ]
        adjusted = []
        for worker in workers:
            mine = [p for p in self._placed if p.worker_id == worker.worker_id]
            if not mine:
                adjusted.append(worker)
                continue
            pooled = dict(worker.pooled_kernels)
            for p in mine:
                if pooled.get(p.kernel_name):
                    pooled[p.kernel_name] -= 1
            running = worker.running_kernels + len(mine)
            update = {"running_kernels": running, "pooled_kernels": pooled}
            adjusted.append(worker.model_copy(update=update))
        return adjusted

    def choose(self, workers: list[WorkerHeartbeat], kernel_name: str) -> WorkerHeartbeat:
        """`choose_worker` over `view(workers)`, among the workers whose own heartbeat shows a
        free slot: call `placed` at once with the result.

        The view is an upper bound: a start it counts may already be in the heartbeat (a
        worker counts its starts in flight, and those it finished before the heartbeat). It
        orders the workers, but a worker it shows full is asked all the same; one that is full
        refuses (`CapacityExceeded`) and the caller asks the next.
        """
        with_room = {w.worker_id for w in workers if w.free_slots > 0}
        return choose_worker(self.view(workers), kernel_name, with_room)

    @contextmanager
    def placed(self, worker_id: str, kernel_name: str) -> Iterator[None]:
        """Count one start on `worker_id` from now until `settle` seconds after it ends; a
        start that failed started nothing and stops counting at once."""
        entry = _Placed(worker_id, kernel_name)
        self._placed.append(entry)
        try:
            yield
        except BaseException:
            self._placed.remove(entry)
            raise
        entry.finished_at = self.clock()
