"""Read-your-writes for this replica's own starts and shutdowns (ADR 0023).

A worker answers a start or a shutdown even when its registry write is still pending (a
stream electing its leader); until that write reaches this replica's registry view, the
registry alone would say the new kernel does not exist, or still list the one shut down. So
the replica remembers what workers told it: a kernel it got back from a start or restart is
served and listed until the view holds it, a kernel it shut down is neither until the view
has dropped it; each note lasts at most `keep` seconds. Pure logic: the caller says what the
view holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from kernelbus.models import KernelRecord
from kernelbus.registryview import KernelSummary

KEEP = 60.0
"""Seconds a note lasts at most: far longer than a leader election (4-9 s) and the flush
that follows it; a worker that cannot write for longer than that is not answering anyway."""


class Gone(Enum):
    """What this replica knows of a kernel or session it removed: gone (also
    `sessionwrites`)."""

    GONE = "gone"


GONE = Gone.GONE


@dataclass
class RecentWrites:
    keep: float = KEEP
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    _started: dict[str, tuple[KernelRecord, float]] = field(default_factory=dict)
    _removed: dict[str, float] = field(default_factory=dict)

    def started(self, record: KernelRecord) -> None:
        """A worker answered a start or restart with `record`."""
        self._removed.pop(record.id, None)
        self._started[record.id] = (record, self.clock() + self.keep)

    def removed(self, kernel_id: str) -> None:
        """A worker answered this replica's shutdown of `kernel_id`."""
        self._started.pop(kernel_id, None)
        self._removed[kernel_id] = self.clock() + self.keep

    def lookup(self, kernel_id: str, viewed: bool | None) -> KernelRecord | Gone | None:
        """What this replica knows better than the registry about `kernel_id`: its own record
        (the view does not hold it yet), `GONE` (shut down, the view still holds it), or None
        (ask the registry). `viewed`: whether the view holds it; None when unknown (no view
        loaded: the note stands until it expires)."""
        self._expire()
        if (started := self._started.get(kernel_id)) is not None:
            if viewed:
                del self._started[kernel_id]  # the registry has it: it is the fresher one
                return None
            return started[0]
        if kernel_id in self._removed:
            if viewed is False:  # the view dropped it too: the note ends
                del self._removed[kernel_id]
            return GONE
        return None

    def overlay(self, listed: list[KernelSummary]) -> list[KernelSummary]:
        """`listed` (the registry's kernels) with this replica's started kernels it lacks
        added and its shut down ones left out; notes the listing has caught up with end."""
        self._expire()
        if not self._started and not self._removed:
            return listed
        ids = {summary.id for summary in listed}
        for kernel_id in [k for k in self._started if k in ids]:
            del self._started[kernel_id]
        for kernel_id in [k for k in self._removed if k not in ids]:
            del self._removed[kernel_id]
        kept = [s for s in listed if s.id not in self._removed]
        return kept + [KernelSummary.of(record) for record, _ in self._started.values()]

    def __len__(self) -> int:
        return len(self._started) + len(self._removed)

    def _expire(self) -> None:
        now = self.clock()
        for kernel_id in [k for k, (_, until) in self._started.items() if until <= now]:
            del self._started[kernel_id]
        for kernel_id in [k for k, until in self._removed.items() if until <= now]:
            del self._removed[kernel_id]
