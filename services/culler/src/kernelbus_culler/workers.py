"""Worker-loss detection, as pure state: which workers vanished without saying goodbye.

A worker is a candidate while the culler has seen its heartbeat, or while a kernel that is not
`dead` names it as owner (so a culler restarted after the loss still notices). It is lost when
it is absent from the live heartbeats on two consecutive checks (the grace lets a late
`worker_stopped` event arrive) and no `worker_stopped` event was seen for it.

A faster path (ADR 0016): each candidate's liveness subject is probed; NATS answers "no
responders" at once when no connection is subscribed. A worker with no responder on every
probe for `grace` seconds is lost too, without waiting for its heartbeat to age out. A slow or
failed probe says nothing. A worker handled as lost is not taken for alive again by its last
heartbeat (it lingers in the bucket for the TTL), only by a heartbeat of a new start.

The other way round, a worker whose heartbeat expired but whose host still answers the probe
(in compose, kernelbus-worker-init answers while it restarts the worker process, which takes
longer than the TTL on a loaded host) is not lost yet: for up to `RESTART_ALLOWANCE` seconds
without a heartbeat, while the probe answered within the last `ANSWER_FRESH` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from kernelbus.models import WorkerHeartbeat

RESTART_ALLOWANCE = 60.0
"""Seconds a worker whose host answers the probe may go without a heartbeat (a restart)."""
ANSWER_FRESH = 5.0
"""A probe answer this recent (seconds) counts as the host answering now."""


@dataclass(frozen=True)
class LostWorker:
    worker_id: str
    last_heartbeat: WorkerHeartbeat | None


@dataclass
class WorkerTracker:
    known: dict[str, WorkerHeartbeat | None] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    stopped: set[str] = field(default_factory=set)
    unreachable: dict[str, float] = field(default_factory=dict)
    """worker_id -> when the current run of "no responder" probes began (monotonic s)."""
    handled: dict[str, datetime | None] = field(default_factory=dict)
    """Workers handled as lost -> `started_at` of their last heartbeat, ignored from now on."""
    answered: dict[str, float] = field(default_factory=dict)
    """worker_id -> when its liveness probe last got an answer (monotonic s)."""
    absent_since: dict[str, float] = field(default_factory=dict)
    """worker_id -> when its heartbeat was first seen missing (monotonic s)."""

    def note_stopped(self, worker_id: str) -> None:
        """A `worker_stopped` event: the worker left cleanly and is not lost."""
        self.stopped.add(worker_id)

    def check(
        self, live: Iterable[WorkerHeartbeat], owners: Iterable[str], now: float = 0.0
    ) -> list[LostWorker]:
        """Workers absent now and at the previous check, not stopped cleanly, and not
        answering the liveness probe (within the restart allowance)."""
        live_ids = set()
        for heartbeat in live:
            if self._handled(heartbeat):
                continue
            live_ids.add(heartbeat.worker_id)
            self.known[heartbeat.worker_id] = heartbeat
            self.stopped.discard(heartbeat.worker_id)
        for gone in set(self.handled) - {h.worker_id for h in live}:
            del self.handled[gone]  # its last heartbeat aged out
        for owner in owners:
            if owner not in self.handled:
                self.known.setdefault(owner, None)
        absent = {w for w in self.known if w not in live_ids and w not in self.stopped}
        for worker_id in set(self.absent_since) - absent:
            del self.absent_since[worker_id]
        for worker_id in absent:
            self.absent_since.setdefault(worker_id, now)
        lost = sorted(w for w in absent & self.missing if not self._answering(w, now))
        self.missing = absent
        return [LostWorker(w, self.known[w]) for w in lost]

    def _handled(self, heartbeat: WorkerHeartbeat) -> bool:
        if heartbeat.worker_id not in self.handled:
            return False
        if self.handled[heartbeat.worker_id] == heartbeat.started_at:
            return True  # the lost worker's last heartbeat, still in the bucket
        del self.handled[heartbeat.worker_id]  # started again (same id): a new worker
        return False

    def _answering(self, worker_id: str, now: float) -> bool:
        """Its host answered the probe just now, and it has not been without a heartbeat for
        longer than any restart takes."""
        answered = self.answered.get(worker_id)
        if answered is None or now - answered > ANSWER_FRESH:
            return False
        return now - self.absent_since.get(worker_id, now) < RESTART_ALLOWANCE

    def candidates(self) -> list[str]:
        """Workers to probe: known, not stopped cleanly."""
        return sorted(w for w in self.known if w not in self.stopped)

    def probed(self, worker_id: str, responder: bool | None, now: float) -> None:
        """A probe's result: False (no responder) starts or continues a run, True ends it,
        None (could not tell) changes nothing."""
        if responder is False:
            self.unreachable.setdefault(worker_id, now)
        elif responder is True:
            self.unreachable.pop(worker_id, None)
            self.answered[worker_id] = now

    def disconnected(self, grace: float, now: float) -> list[LostWorker]:
        """Known workers without a responder on every probe for `grace` seconds, not stopped."""
        lost = sorted(
            w
            for w, since in self.unreachable.items()
            if now - since >= grace and w in self.known and w not in self.stopped
        )
        return [LostWorker(w, self.known[w]) for w in lost]

    def outage(self) -> None:
        """The bus went down: absences seen before it do not count towards a loss after it."""
        self.missing.clear()
        self.unreachable.clear()
        self.answered.clear()

    def forget(self, worker_id: str) -> None:
        """The loss was handled (event emitted, kernels marked dead)."""
        heartbeat = self.known.pop(worker_id, None)
        self.handled[worker_id] = heartbeat.started_at if heartbeat else None
        self.missing.discard(worker_id)
        self.unreachable.pop(worker_id, None)
        self.answered.pop(worker_id, None)
        self.absent_since.pop(worker_id, None)
