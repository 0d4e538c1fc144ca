"""Where a kernel is in its life on this worker, as the worker (not the kernel) sees it.

This is not the Jupyter `execution_state` of the record (idle, busy, ...), which the kernel's
iopub drives; it says which of the worker's own operations owns the kernel right now: the
death watch and the activity flush leave a kernel alone while a restart or a shutdown
replaces or removes its process.
"""

from __future__ import annotations

import enum


class Lifecycle(enum.Enum):
    STARTING = "starting"
    """Launched (or being re-adopted, or waiting in the warm pool), not registered yet."""
    RUNNING = "running"
    """Registered and watched: an exit nobody asked for is noticed and acted on."""
    RESTARTING = "restarting"
    """A restart (asked for or automatic) is replacing the process."""
    SHUTTING_DOWN = "shutting_down"
    """Being shut down; leaves the worker when that ends."""
    DEAD = "dead"
    """Declared dead (its record says why); only a restart or a shutdown is left."""

    @property
    def in_transition(self) -> bool:
        """A restart or shutdown owns the kernel: not watched, its record not flushed."""
        return self in (Lifecycle.RESTARTING, Lifecycle.SHUTTING_DOWN)


TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.STARTING: frozenset({Lifecycle.RUNNING, Lifecycle.DEAD, Lifecycle.SHUTTING_DOWN}),
    Lifecycle.RUNNING: frozenset({Lifecycle.RESTARTING, Lifecycle.SHUTTING_DOWN, Lifecycle.DEAD}),
    # Two restarts at once (asked while an automatic one runs) go on as they always did.
    Lifecycle.RESTARTING: frozenset(
        {Lifecycle.RUNNING, Lifecycle.RESTARTING, Lifecycle.DEAD, Lifecycle.SHUTTING_DOWN}
    ),
    Lifecycle.DEAD: frozenset({Lifecycle.RESTARTING, Lifecycle.SHUTTING_DOWN}),
    # A second shutdown of the same kernel (a client retrying) goes on as the first did.
    Lifecycle.SHUTTING_DOWN: frozenset({Lifecycle.SHUTTING_DOWN}),
}


class LifecycleError(RuntimeError):
    """An operation the kernel's lifecycle state does not allow (e.g. a restart while it is
    being shut down)."""


def check_transition(current: Lifecycle, new: Lifecycle) -> None:
    if new not in TRANSITIONS[current]:
        raise LifecycleError(f"kernel is {current.value}: cannot become {new.value}")
