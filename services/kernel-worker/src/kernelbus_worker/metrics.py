"""The worker's Prometheus series, served by `httpserver` at `/metrics`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from kernelbus.metrics import MetricsRegistry
from kernelbus_worker.outbox import Outbox

P = ParamSpec("P")
T = TypeVar("T")

REGISTRY = MetricsRegistry()
KERNELS_RUNNING = REGISTRY.gauge(
    "kernelbus_worker_kernels_running", "Kernels running or starting on this worker."
)
POOLED_KERNELS = REGISTRY.gauge(
    "kernelbus_worker_pooled_kernels", "Warm-pool kernels ready to be claimed on this worker."
)
POOL_TARGET = REGISTRY.gauge(
    "kernelbus_worker_pool_target",
    "Warm-pool kernels this worker aims at (configured size, grown by recent starts).",
)
KERNEL_STARTS = REGISTRY.counter(
    "kernelbus_worker_kernel_starts_total", "Kernels this worker launched successfully."
)
KERNEL_START_FAILURES = REGISTRY.counter(
    "kernelbus_worker_kernel_start_failures_total", "Kernel launches that failed or timed out."
)
KERNEL_START_SECONDS = REGISTRY.histogram(
    "kernelbus_worker_kernel_start_seconds", "Seconds from launch to the first kernel_info reply."
)
MESSAGES_RELAYED = REGISTRY.counter(
    "kernelbus_worker_messages_relayed_total",
    "Jupyter messages relayed between NATS and kernels.",
    ("direction",),
)
BYTES_RELAYED = REGISTRY.counter(
    "kernelbus_worker_bytes_relayed_total",
    "Bytes of Jupyter messages relayed between NATS and kernels.",
    ("direction",),
)

TO_KERNEL = "to_kernel"
TO_CLIENTS = "to_clients"


def relayed(direction: str, size: int) -> None:
    MESSAGES_RELAYED.inc(direction=direction)
    BYTES_RELAYED.inc(size, direction=direction)


@contextmanager
def timed_start() -> Iterator[None]:
    """Count one kernel launch as a start or a failure, and observe how long it took."""
    began = time.monotonic()
    try:
        yield
    except BaseException:
        KERNEL_START_FAILURES.inc()
        raise
    KERNEL_STARTS.inc()
    KERNEL_START_SECONDS.observe(time.monotonic() - began)


class MeteredOutbox(Outbox):
    """The outbox, counting every kernel message it publishes towards clients."""

    async def publish(self, subject: str, frame: bytes) -> None:
        await super().publish(subject, frame)
        relayed(TO_CLIENTS, len(frame))


def measured_start(
    launch: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate the coroutine that launches one kernel with `timed_start`."""

    @functools.wraps(launch)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with timed_start():
            return await launch(*args, **kwargs)

    return wrapper
