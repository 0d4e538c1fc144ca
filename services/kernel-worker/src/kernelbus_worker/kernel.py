"""One kernel on this worker: its record, its jupyter_client manager, and where it is in its
lifecycle, with the two parts that carry its traffic: the bridge (ZMQ sockets, pumps,
readiness probe; `bridge.py`) and the connection table (who is attached and what each is
owed; `connections.py`). Lifecycle policy (restarts, capacity) lives in the supervisor and
the restarter; records are written by `records.KernelRecords`.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from kernelbus.logs import kernel_logger
from kernelbus.models import KernelRecord
from kernelbus.timefmt import utcnow
from kernelbus_worker.activity import Activity
from kernelbus_worker.bridge import KernelBridge, KernelExited
from kernelbus_worker.connections import ConnectionTable, Limits
from kernelbus_worker.inputs import ReceivedInputs
from kernelbus_worker.lifecycle import Lifecycle, check_transition
from kernelbus_worker.outbox import Outbox
from kernelbus_worker.settings import WorkerSettings

__all__ = ["KernelExited", "ManagedKernel", "plain"]

log = logging.getLogger(__name__)


class ManagedKernel:
    """A kernel, its bridge and its connections. `state` changes only through the lifecycle
    methods below; the record's unsaved mark is set here and cleared only by the writer of
    records (`records.KernelRecords`)."""

    def __init__(
        self,
        record: KernelRecord,
        km: AsyncKernelManager,
        settings: WorkerSettings,
        outbox: Outbox,
        context: zmq.asyncio.Context,
    ) -> None:
        self.record = record
        self.km = km
        self.settings = settings
        self.outbox = outbox
        self.log = kernel_logger(log, kernel_id=record.id, worker_id=record.worker_id)
        self.activity = Activity(settings.untracked_types)
        self.connections = ConnectionTable(
            Limits(
                replay_window=settings.replay_window,
                replay_max_messages=settings.replay_max_messages,
                replay_max_bytes=settings.replay_max_bytes,
                recent_window=settings.recent_window,
            ),
            self.log,
        )
        self.bridge = KernelBridge(
            context, outbox, self.connections, self.activity, self._observed, record.id, self.log
        )
        self.inputs = ReceivedInputs()
        """Which client messages of each connection arrived (`inputs.py`, ADR 0024)."""
        self.spec_env: dict[str, str] = {}
        self._state = Lifecycle.STARTING
        self._unsaved = True
        self.consecutive_restarts = 0
        """Automatic restarts since the kernel last stayed up `stable_start_time` seconds."""
        self.up_since = 0.0  # monotonic time the last automatic restart made the kernel ready

    @property
    def id(self) -> str:
        return self.record.id

    def relabel(self, record: KernelRecord) -> None:
        """Give a pre-started (pooled) kernel the identity a client asked for."""
        self.record = record
        self.km.kernel_id = record.id
        self.log = kernel_logger(log, kernel_id=record.id, worker_id=record.worker_id)
        self.bridge.relabel(record.id, self.log)

    # --- the bridge, as the lifecycle uses it -----------------------------------------------

    def open_bridge(self) -> None:
        """(Re)connect the bridge to the kernel's current ports and start pumping."""
        info = plain(self.km.get_connection_info())
        self.record.connection_info = info
        self.bridge.open(info)

    def close_bridge(self) -> None:
        self.bridge.close()

    async def wait_ready(self, timeout: float) -> None:
        """Until the kernel answered the bridge's probe both ways (`KernelBridge.wait_ready`);
        KernelExited if its process is gone meanwhile."""
        await self.bridge.wait_ready(timeout, self.km.is_alive)

    def _observed(self, active: bool, changed: bool) -> None:
        """The bridge saw iopub activity or an execution-state change."""
        if active:
            self.record.last_activity = utcnow()
            self._unsaved = True
        if changed and self.record.execution_state not in ("restarting", "dead"):
            self.record.execution_state = self.activity.execution_state  # type: ignore[assignment]
            self._unsaved = True

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def state(self) -> Lifecycle:
        return self._state

    def _become(self, state: Lifecycle) -> None:
        check_transition(self._state, state)
        self._state = state

    def registered(self) -> None:
        """In the supervisor's table: reachable, watched, and open to a shutdown from now on."""
        self._become(Lifecycle.RUNNING)

    def restart_began(self) -> None:
        """A restart (asked for or automatic) replaces the process; LifecycleError if the
        kernel is being shut down."""
        self._become(Lifecycle.RESTARTING)

    def restart_ended(self) -> None:
        """The restart ended either way: the kernel is dead if its record says so (the
        restart failed on a dead kernel, or an automatic one declared it dead), else running
        (watched again: a process that did not come back is noticed). A shutdown that began
        meanwhile keeps the kernel."""
        if self._state is Lifecycle.RESTARTING:
            dead = self.record.execution_state == "dead"
            self._become(Lifecycle.DEAD if dead else Lifecycle.RUNNING)

    def shutdown_began(self) -> None:
        self._become(Lifecycle.SHUTTING_DOWN)

    def declared_dead(self, reason: str) -> None:
        """Dead for good unless restarted: the record says why (REST shows it)."""
        self._become(Lifecycle.DEAD)
        self.record.execution_state = "dead"
        self.record.reason = reason
        self._unsaved = True

    # --- the record's unsaved mark ----------------------------------------------------------

    @property
    def unsaved(self) -> bool:
        """The record changed since it was last written to the registry."""
        return self._unsaved

    def record_changed(self) -> None:
        self._unsaved = True

    def take_unsaved(self) -> None:
        """For `KernelRecords` only: a write of the record begins (a failed one calls
        `record_changed` again)."""
        self._unsaved = False


def plain(value: Any) -> Any:
    """Connection/provisioner info as JSON-safe values (the HMAC key arrives as bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
