"""Worker-loss detection, as pure state: which workers vanished without saying goodbye.

A worker is a candidate while the culler has seen its heartbeat, or while a kernel that is not
`dead` names it as owner (so a culler restarted after the loss still notices). It is lost when
it is absent from the live heartbeats on two consecutive checks (the grace lets a late
`worker_stopped` event arrive) and no `worker_stopped` event was seen for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kernelbus.models import WorkerHeartbeat


@dataclass(frozen=True)
class LostWorker:
    worker_id: str
    last_heartbeat: WorkerHeartbeat | None


@dataclass
class WorkerTracker:
    known: dict[str, WorkerHeartbeat | None] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)

    def note_stopped(self, worker_id: str) -> None:
        """A `worker_stopped` event: the worker left cleanly and is not lost."""
        self.stopped.add(worker_id)

    def check(self, live: Iterable[WorkerHeartbeat], owners: Iterable[str]) -> list[LostWorker]:
        """Workers absent now and at the previous check, not stopped cleanly."""
        live_ids = set()
        for heartbeat in live:
            live_ids.add(heartbeat.worker_id)
            self.known[heartbeat.worker_id] = heartbeat
            self.stopped.discard(heartbeat.worker_id)
        for owner in owners:
            self.known.setdefault(owner, None)
        absent = {w for w in self.known if w not in live_ids and w not in self.stopped}
        lost = sorted(absent & self.missing)
        self.missing = absent
        return [LostWorker(w, self.known[w]) for w in lost]

    def outage(self) -> None:
        """The bus went down: absences seen before it do not count towards a loss after it."""
        self.missing.clear()

    def forget(self, worker_id: str) -> None:
        """The loss was handled (event emitted, kernels marked dead)."""
        self.known.pop(worker_id, None)
        self.missing.discard(worker_id)
