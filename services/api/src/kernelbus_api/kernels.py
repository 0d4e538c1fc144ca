"""Kernel lifecycle as the api performs it: placement, admission and commands over the bus."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kernelbus import bus, events, subjects
from kernelbus.bounded import UNANSWERED, LastGood, within
from kernelbus.bus_kv import Bucket
from kernelbus.bus_types import Client
from kernelbus.errors import (
    BusTimeout,
    CapacityExceeded,
    InternalError,
    KernelbusError,
    LaunchTimeout,
    NoSuchKernel,
    NoWorkerAvailable,
)
from kernelbus.eventpublisher import EventPublisher
from kernelbus.messages import (
    InterruptKernel,
    KernelReply,
    RestartKernel,
    ShutdownKernel,
    StartKernel,
    new_kernel_id,
)
from kernelbus.models import KernelRecord, WorkerHeartbeat
from kernelbus.registry import Registry
from kernelbus.registryview import KernelSummary
from kernelbus_api import kernelspecs
from kernelbus_api.admission import Admission
from kernelbus_api.authorization import authorize, bind_username
from kernelbus_api.drainset import drained_workers
from kernelbus_api.errors import status_for
from kernelbus_api.kernel_env import kernel_env
from kernelbus_api.models import StartKernelBody
from kernelbus_api.placement import Placements
from kernelbus_api.recent import GONE, RecentWrites
from kernelbus_api.settings import ApiSettings

log = logging.getLogger(__name__)

# Room for the worker's own launch/restart bound to fire and answer before the bus gives up.
_REPLY_PAD = 5.0
DRAINS_KEEP = 30.0
"""Seconds the last list of drained workers is served while `kb_drains` has no stream
leader (ADR 0023): a drain noted meanwhile may be missed by a placement or two."""


@dataclass
class Kernels:
    settings: ApiSettings
    nc: Client
    registry: Registry
    admission: Admission
    drains: Bucket | None = None
    """`kb_drains`: workers that take no new kernels (`POST /api/admin/workers/{id}/drain`)."""
    events: EventPublisher | None = None
    """Where failed lifecycle actions are reported as `kernel_actions` error events."""
    placements: Placements = field(default_factory=Placements)
    recent: RecentWrites = field(default_factory=RecentWrites)
    """What workers answered this replica's starts and shutdowns, served until the registry
    view has caught up (their writes may be pending during a leader election: ADR 0023)."""
    drains_seen: LastGood[set[str]] = field(
        default_factory=lambda: LastGood(keep=DRAINS_KEEP), compare=False
    )

    async def model(self, record: KernelRecord) -> dict[str, Any]:
        return record.jupyter_model(await self.registry.connections_of(record.id))

    async def summaries(self) -> list[KernelSummary]:
        """Every kernel: the registry's, with this replica's own recent writes applied."""
        return self.recent.overlay(await self.registry.kernel_summaries())

    async def list_models(self) -> list[dict[str, Any]]:
        counts = await self.registry.connection_counts()
        records = await self.summaries()
        return [r.jupyter_model(counts.get(r.id, 0)) for r in sorted(records, key=_started)]

    async def list_json(self) -> bytes:
        """`list_models()` rendered as JSON from the pre-rendered registry view entries."""
        counts = await self.registry.connection_counts()
        records = sorted(await self.summaries(), key=_started)
        return b"[" + b",".join(r.model_json(counts.get(r.id, 0)) for r in records) + b"]"

    async def get(self, kernel_id: str) -> KernelRecord:
        record = await self.find(kernel_id)
        if record is None:
            raise NoSuchKernel(f"Kernel does not exist: {kernel_id}")
        return record

    async def find(self, kernel_id: str) -> KernelRecord | None:
        """The kernel's record (this replica's own recent writes first); None if absent."""
        known = self.recent.lookup(kernel_id, self.registry.viewed(kernel_id))
        if known is GONE:
            return None
        if known is not None:
            return known
        if not self.registry.viewed(kernel_id):
            return await self.registry.get_kernel(kernel_id)
        try:
            return await within(self.registry.get_kernel(kernel_id))
        except UNANSWERED as exc:
            # No stream leader (replicas may not answer direct gets then): the view holds
            # the kernel, as of the stream's last write before it lost its leader (ADR 0023).
            log.info(
                "kernel %s: registry not answering (%s); from the view",
                kernel_id,
                exc.message,
                extra={"kernel_id": kernel_id},
            )
            return self.registry.viewed_record(kernel_id)

    async def start(self, body: StartKernelBody, user: str | None = None) -> KernelRecord:
        """Start (or, for a known `kernel_id`, return) a kernel; see PROTOCOLS §1.5.

        `user`: the user the request's token is bound to (`kernelbus_api.authorization`).
        """
        if user is not None:
            body = body.model_copy(update={"env": bind_username(body.env, user)})
        if body.kernel_id and (existing := await self.find(body.kernel_id)):
            return existing
        settings = self.settings
        name = settings.force_kernel_name or body.name or settings.default_kernel_name
        ids: dict[str, str] = {"kernel_id": body.kernel_id} if body.kernel_id else {}
        async with self._reported("start", ids, name):
            command = self._start_command(body)
            ids["kernel_id"] = command.kernel_id
            workers = await self.registry.live_workers()
            spec = kernelspecs.union(workers).get(command.kernel_name)
            authorize(self.settings, spec, command.username)  # before placement, as EG
            if self.drains is not None:
                drains = self.drains
                drained = await self.drains_seen.get(
                    lambda: drained_workers(drains), "drained workers"
                )
                workers = [w for w in workers if w.worker_id not in drained]
            timeout = command.launch_timeout + _REPLY_PAD
            async with self.admission.reserve(command.kernel_id, command.username, timeout):
                reply = await self._place(workers, command, timeout)
            if reply.kernel is None:
                raise InternalError("the worker's start reply carried no kernel")
            self.recent.started(reply.kernel)
            return reply.kernel

    async def _place(
        self, workers: list[WorkerHeartbeat], command: StartKernel, timeout: float
    ) -> KernelReply:
        """Send the start to the least-loaded worker; one that refuses it as full (it counts
        its running and in-flight starts, whichever api replica placed them), or that nobody
        answers for (gone since its last heartbeat; the list may be the last good one during
        a leader election, ADR 0023), is left out and the next one is asked: nothing was
        started. None left → `NoWorkerAvailable` (503, safe to retry)."""
        while True:
            # No await between choosing and counting the start: a burst sees every earlier one.
            worker = self.placements.choose(workers, command.kernel_name)
            try:
                with self.placements.placed(worker.worker_id, command.kernel_name):
                    return await self._send_start(worker.worker_id, command, timeout)
            except (CapacityExceeded, NoWorkerAvailable) as exc:
                full = isinstance(exc, CapacityExceeded)
                log.info(
                    "worker %s %s: placing the start elsewhere",
                    worker.worker_id,
                    "is full" if full else "did not answer (no responder)",
                    extra={"kernel_id": command.kernel_id, "worker_id": worker.worker_id},
                )
                workers = [w for w in workers if w.worker_id != worker.worker_id]
                if not any(w.has_spec(command.kernel_name) for w in workers):
                    raise NoWorkerAvailable(
                        f"every kernel worker that runs {command.kernel_name} is full"
                        if full
                        else "no kernel worker is available; try again later"
                    ) from None

    @contextlib.asynccontextmanager
    async def _reported(
        self, action: str, ids: dict[str, str], kernel_name: str | None = None
    ) -> AsyncIterator[None]:
        """A failed `action` becomes a jupyter_server `kernel_actions` error event (status
        "error", the HTTP status_code the client gets, msg) before the error propagates.
        `ids` holds the kernel_id once known (a start may fail before one is chosen)."""
        try:
            yield
        except KernelbusError as exc:
            code = status_for(exc)
            await self._emit_error(action, ids.get("kernel_id"), kernel_name, code, exc.message)
            raise

    async def _emit_error(
        self, action: str, kernel_id: str | None, name: str | None, code: int, message: str
    ) -> None:
        if self.events is None:
            return
        data = events.kernel_action(action, kernel_id, name, message, status_code=code)
        try:
            await self.events.emit(events.KERNEL_ACTIONS, data)
        except Exception:
            log.exception(
                "could not emit the %s error event", action, extra={"kernel_id": kernel_id}
            )

    def _start_command(self, body: StartKernelBody) -> StartKernel:
        settings = self.settings
        name = settings.force_kernel_name or body.name or settings.default_kernel_name
        env = kernel_env(body.env, settings.client_env_names, settings.launch_timeout)
        return StartKernel(
            kernel_id=body.kernel_id or new_kernel_id(),
            kernel_name=name,
            env=env.env,
            username=env.username,
            launch_timeout=env.launch_timeout,
            working_dir=env.working_dir,
        )

    async def _send_start(
        self, worker_id: str, command: StartKernel, timeout: float
    ) -> KernelReply:
        subject = subjects.worker_start(worker_id)
        try:
            return await bus.request(self.nc, subject, command, timeout=timeout)
        except BusTimeout as exc:
            # The worker may have started it after all: ask for its shutdown, then fail as EG.
            await self._forget(command.kernel_id)
            raise LaunchTimeout(f"kernel {command.kernel_id} did not start in time") from exc

    async def _forget(self, kernel_id: str) -> None:
        with contextlib.suppress(KernelbusError):
            command = ShutdownKernel(kernel_id=kernel_id, reason="launch timeout")
            await self._command(command, timeout=_REPLY_PAD)

    async def interrupt(self, kernel_id: str) -> None:
        record = await self.get(kernel_id)
        async with self._reported("interrupt", {"kernel_id": kernel_id}, record.name):
            await self._command(InterruptKernel(kernel_id=kernel_id))

    async def restart(self, kernel_id: str) -> KernelRecord:
        record = await self.get(kernel_id)
        timeout = self.settings.kernel_info_timeout + _REPLY_PAD
        command = RestartKernel(
            kernel_id=kernel_id, kernel_info_timeout=self.settings.kernel_info_timeout
        )
        async with self._reported("restart", {"kernel_id": kernel_id}, record.name):
            reply = await self._command(command, timeout)
        if reply.kernel is not None:
            self.recent.started(reply.kernel)
        return reply.kernel or await self.get(kernel_id)

    async def shutdown(self, kernel_id: str) -> None:
        """Shut a kernel down; a record whose worker is gone is simply removed (nothing runs)."""
        record = await self.get(kernel_id)
        async with self._reported("shutdown", {"kernel_id": kernel_id}, record.name):
            try:
                await self._command(ShutdownKernel(kernel_id=kernel_id, reason="api delete"))
                self.recent.removed(kernel_id)
            except (NoWorkerAvailable, NoSuchKernel):
                log.warning(
                    "kernel %s had no live owner; removing its record",
                    kernel_id,
                    extra={"kernel_id": kernel_id},
                )
                await self.registry.delete_kernel(kernel_id)

    async def _command(
        self,
        command: InterruptKernel | RestartKernel | ShutdownKernel,
        timeout: float | None = None,
    ) -> KernelReply:
        subject = subjects.kernel_command(command.kernel_id)
        try:
            return await bus.request(
                self.nc, subject, command, timeout=timeout or self.settings.request_timeout
            )
        except NoWorkerAvailable as exc:
            raise NoWorkerAvailable(
                f"the worker running kernel {command.kernel_id} is not answering"
            ) from exc


def _started(record: KernelSummary) -> Any:
    return record.started_at
