"""The culler's picture of every kernel: registry records, refreshed every tick, made fresher
between ticks by the workers' kernel_activity events (the registry is written rate-limited).

Pure state, no I/O: the service feeds it records, connection counts and validated events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from kernelbus.models import ExecutionState, KernelRecord
from kernelbus.registryview import KernelSummary
from kernelbus.timefmt import parse_timestamp
from kernelbus_culler.policy import KernelSnapshot

Listed = KernelRecord | KernelSummary
"""A registry record as read directly, or as the watch-fed view keeps it."""


@dataclass(frozen=True)
class Activity:
    """What one kernel_activity event said."""

    execution_state: ExecutionState
    last_activity: datetime

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> Activity:
        """From schema-validated event data (`ValueError` if last_activity does not parse)."""
        state = cast(ExecutionState, data["execution_state"])
        return cls(state, parse_timestamp(str(data["last_activity"])))


@dataclass
class KernelView:
    records: dict[str, Listed] = field(default_factory=dict)
    connections: dict[str, int] | None = None
    activity: dict[str, Activity] = field(default_factory=dict)

    def refresh(self, records: list[Listed], connections: dict[str, int] | None) -> None:
        """Replace the registry part; forget activity of kernels that are gone."""
        self.records = {record.id: record for record in records}
        self.connections = connections
        self.activity = {k: a for k, a in self.activity.items() if k in self.records}

    def apply(self, kernel_id: str, activity: Activity) -> None:
        """Keep the newest activity seen for a kernel (events may arrive out of order)."""
        current = self.activity.get(kernel_id)
        if current is None or activity.last_activity >= current.last_activity:
            self.activity[kernel_id] = activity

    def kernel_ids(self) -> list[str]:
        return list(self.records)

    def snapshot(self, kernel_id: str) -> KernelSnapshot | None:
        record = self.records.get(kernel_id)
        if record is None:
            return None
        count = None if self.connections is None else self.connections.get(kernel_id, 0)
        return merge(record, self.activity.get(kernel_id), count)


def merge(record: Listed, activity: Activity | None, connections: int | None) -> KernelSnapshot:
    """The freshest facts about a kernel: an event newer than the record wins.

    A record that says `dead` always wins: the worker-loss path marks records dead without
    touching last_activity, and a late 'idle' event must not resurrect them.
    """
    state, last = record.execution_state, record.last_activity
    if activity is not None and _newer(activity, record):
        state, last = activity.execution_state, activity.last_activity
    return KernelSnapshot(record.id, record.name, state, last, connections)


def _newer(activity: Activity, record: Listed) -> bool:
    if record.execution_state == "dead":
        return False
    return activity.last_activity >= record.last_activity
