"""The culling decision, as pure logic: jupyter_server's rules (PROTOCOLS.md §5.2) plus the
refusals a distributed culler needs (never act on data it cannot trust).

No I/O here: the service gathers a `KernelSnapshot` and asks `decide()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from kernelbus.models import ExecutionState, WorkerHeartbeat

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(seconds=5)
"""A last_activity this far in the future means a clock or data problem: never cull on it.
Smaller offsets are normal skew between hosts and count as 'just active'."""


@dataclass(frozen=True)
class CullPolicy:
    """The culling settings of jupyter_server's MappingKernelManager."""

    idle_timeout: float
    cull_busy: bool = False
    cull_connected: bool = False
    spec_timeouts: Mapping[str, float] | None = None

    @property
    def enabled(self) -> bool:
        return self.idle_timeout > 0

    def timeout_for(self, kernel_name: str) -> float:
        """The per-kernelspec override, else the global timeout (only used while enabled)."""
        if self.spec_timeouts and kernel_name in self.spec_timeouts:
            return self.spec_timeouts[kernel_name]
        return self.idle_timeout


@dataclass(frozen=True)
class KernelSnapshot:
    """What the culler knows of one kernel; `connections` is None when it could not be read."""

    kernel_id: str
    name: str
    execution_state: ExecutionState
    last_activity: datetime
    connections: int | None


class Verdict(Enum):
    KEEP = "keep"
    CULL_DEAD = "dead"
    CULL_IDLE = "idle"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    idle_seconds: float = 0.0
    why: str = ""

    @property
    def cull(self) -> bool:
        return self.verdict in (Verdict.CULL_DEAD, Verdict.CULL_IDLE)


def decide(policy: CullPolicy, kernel: KernelSnapshot | None, now: datetime) -> Decision:
    """Cull or keep one kernel, by jupyter_server's `cull_kernel_if_idle` rules."""
    if not policy.enabled:
        return Decision(Verdict.KEEP, why="culling is disabled")
    if kernel is None:
        return Decision(Verdict.UNTRUSTED, why="no readable registry record")
    if kernel.execution_state == "dead":
        return Decision(Verdict.CULL_DEAD, why="dead")
    idle = now - kernel.last_activity
    if idle < -CLOCK_SKEW:
        return Decision(Verdict.UNTRUSTED, why="last_activity is in the future")
    return _decide_idle(policy, kernel, max(idle.total_seconds(), 0.0))


def _decide_idle(policy: CullPolicy, kernel: KernelSnapshot, idle: float) -> Decision:
    if not idle > policy.timeout_for(kernel.name):
        return Decision(Verdict.KEEP, idle, "recently active")
    if kernel.execution_state == "busy" and not policy.cull_busy:
        return Decision(Verdict.KEEP, idle, "busy")
    if not policy.cull_connected:
        if kernel.connections is None:
            return Decision(Verdict.UNTRUSTED, idle, "connection count unknown")
        if kernel.connections > 0:
            return Decision(Verdict.KEEP, idle, "connected")
    return Decision(Verdict.CULL_IDLE, idle, "idle" if not kernel.connections else "idle_connected")


def cull_log_message(kernel: KernelSnapshot, decision: Decision) -> str:
    """The exact line jupyter_server logs before it culls a kernel."""
    if decision.verdict is Verdict.CULL_DEAD:
        return f"Culling 'dead' dead kernel '{kernel.name}' ({kernel.kernel_id})."
    return (
        f"Culling '{kernel.execution_state}' kernel '{kernel.name}' ({kernel.kernel_id}) "
        f"with {kernel.connections or 0} connections due to {int(decision.idle_seconds)} "
        "seconds of inactivity."
    )


def spec_timeouts(
    metadata_timeouts: Mapping[str, float], configured: Mapping[str, float]
) -> dict[str, float]:
    """Per-kernelspec timeouts: kernelspec `metadata.cull_idle_timeout`, then the setting."""
    return {**metadata_timeouts, **configured}


def metadata_timeouts(heartbeats: Iterable[WorkerHeartbeat]) -> dict[str, float]:
    """`metadata.cull_idle_timeout` of every kernelspec the live workers announce.

    A value that is not a non-negative number is ignored (and logged): a bad kernel.json on
    one worker must not switch culling off, or on, for everyone.
    """
    found: dict[str, float] = {}
    for heartbeat in heartbeats:
        for spec in heartbeat.kernelspecs:
            metadata = spec.spec.get("metadata")
            if not isinstance(metadata, dict) or "cull_idle_timeout" not in metadata:
                continue
            value = metadata["cull_idle_timeout"]
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                found[spec.name] = float(value)
            else:
                log.warning("ignoring cull_idle_timeout %r of kernelspec %s", value, spec.name)
    return found
