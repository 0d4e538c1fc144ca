"""The worker's Prometheus series, served by `httpserver` at `/metrics`."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from kernelbus.metrics import DEFAULT_BUCKETS, new_registry
from kernelbus_worker.outbox import Outbox

P = ParamSpec("P")
T = TypeVar("T")

REGISTRY = new_registry()
KERNELS_RUNNING = Gauge(
    "kernelbus_worker_kernels_running",
    "Kernels running or starting on this worker.",
    registry=REGISTRY,
)
POOLED_KERNELS = Gauge(
    "kernelbus_worker_pooled_kernels",
    "Warm-pool kernels ready to be claimed on this worker.",
    registry=REGISTRY,
)
POOL_TARGET = Gauge(
    "kernelbus_worker_pool_target",
    "Warm-pool kernels this worker aims at (configured size, grown by recent starts).",
    registry=REGISTRY,
)
KERNEL_STARTS = Counter(
    "kernelbus_worker_kernel_starts_total",
    "Kernels this worker launched successfully.",
    registry=REGISTRY,
)
KERNEL_START_FAILURES = Counter(
    "kernelbus_worker_kernel_start_failures_total",
    "Kernel launches that failed or timed out.",
    registry=REGISTRY,
)
KERNEL_START_SECONDS = Histogram(
    "kernelbus_worker_kernel_start_seconds",
    "Seconds from launch to the first kernel_info reply.",
    buckets=DEFAULT_BUCKETS,
    registry=REGISTRY,
)
MESSAGES_RELAYED = Counter(
    "kernelbus_worker_messages_relayed_total",
    "Jupyter messages relayed between NATS and kernels.",
    ("direction",),
    registry=REGISTRY,
)
BYTES_RELAYED = Counter(
    "kernelbus_worker_bytes_relayed_total",
    "Bytes of Jupyter messages relayed between NATS and kernels.",
    ("direction",),
    registry=REGISTRY,
)

TO_KERNEL = "to_kernel"
TO_CLIENTS = "to_clients"
# The children per direction, looked up once rather than per relayed message.
_MESSAGES = {d: MESSAGES_RELAYED.labels(direction=d) for d in (TO_KERNEL, TO_CLIENTS)}
_BYTES = {d: BYTES_RELAYED.labels(direction=d) for d in (TO_KERNEL, TO_CLIENTS)}


def relayed(direction: str, size: int) -> None:
    _MESSAGES[direction].inc()
    _BYTES[direction].inc(size)


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
