"""Which live worker starts a kernel: one with a warm kernel of the spec ready, else the one
with the spec and the most free slots."""

from __future__ import annotations

from kernelbus.errors import NoSuchKernelspec, NoWorkerAvailable
from kernelbus.models import WorkerHeartbeat


def choose_worker(workers: list[WorkerHeartbeat], kernel_name: str) -> WorkerHeartbeat:
    """The least-loaded live worker that can run `kernel_name`.

    No live worker at all, or none with a free slot → `NoWorkerAvailable` (503, nothing was
    started, safe to retry). Live workers, none with the spec → `NoSuchKernelspec`.
    """
    if not workers:
        raise NoWorkerAvailable("no kernel worker is available; try again later")
    able = [w for w in workers if w.has_spec(kernel_name)]
    if not able:
        raise NoSuchKernelspec(f"No such kernel named {kernel_name}")
    free = [w for w in able if w.free_slots > 0]
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
