"""Bus handlers of the worker: the NATS side of commands and kernel traffic.

Worker-level subjects (start, resource) are subscribed for the worker's life; kernel-level
subjects (commands, attach, client input) while the kernel lives here. Commands run as tasks so
a slow start never holds up another command; client input is handled inline, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kernelbus import bus, chunking, subjects
from kernelbus.bus_types import Client, Msg, Subscription
from kernelbus.errors import BadRequest
from kernelbus.kernelenv import check_request_env, check_value
from kernelbus.messages import (
    AttachConnection,
    AttachReply,
    DetachConnection,
    GetResource,
    InterruptKernel,
    KernelReply,
    ResourceReply,
    RestartKernel,
    ShutdownKernel,
    StartKernel,
    connection_command_adapter,
    kernel_command_adapter,
)
from kernelbus_worker import metrics
from kernelbus_worker.kernel import Attached, ManagedKernel
from kernelbus_worker.kernelspecs import Catalog
from kernelbus_worker.liveness import ApiLiveness
from kernelbus_worker.supervisor import Supervisor

log = logging.getLogger(__name__)


class Handlers:
    def __init__(
        self,
        nc: Client,
        supervisor: Supervisor,
        catalog: Catalog,
        worker_id: str,
        liveness: ApiLiveness,
    ) -> None:
        self.nc = nc
        self.liveness = liveness
        self.supervisor = supervisor
        self.catalog = catalog
        self.worker_id = worker_id
        self._worker_subs: list[Subscription] = []
        self._kernel_subs: dict[str, list[Subscription]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def subscribe_worker(self) -> None:
        self._worker_subs = [
            await self.nc.subscribe(
                subjects.worker_start(self.worker_id),
                cb=self._as_task(bus.responder(bus.parse_with(StartKernel), self._start)),
            ),
            await self.nc.subscribe(
                subjects.worker_resource(self.worker_id),
                cb=self._as_task(bus.responder(bus.parse_with(GetResource), self._resource)),
            ),
        ]

    async def unsubscribe_worker(self) -> None:
        for sub in self._worker_subs:
            await sub.unsubscribe()
        self._worker_subs = []

    async def kernel_added(self, kernel: ManagedKernel) -> None:
        kid = kernel.id
        reassembler = chunking.Reassembler()

        async def on_input(msg: Msg) -> None:
            frame = reassembler.feed(msg.headers, msg.data)
            if frame is not None:
                metrics.relayed(metrics.TO_KERNEL, len(frame))
                await kernel.from_client(frame, (msg.headers or {}).get(subjects.CONN_HEADER))

        self._kernel_subs[kid] = [
            await self.nc.subscribe(subjects.kernel_input(kid), cb=on_input),
            await self.nc.subscribe(
                subjects.kernel_command(kid),
                cb=self._as_task(
                    bus.responder(kernel_command_adapter.validate_json, self._command)
                ),
            ),
            await self.nc.subscribe(
                subjects.kernel_attach(kid),
                cb=self._as_task(
                    bus.responder(connection_command_adapter.validate_json, self._attach)
                ),
            ),
        ]
        await bus.flush(self.nc, bus.FLUSH_TIMEOUT)

    async def kernel_removed(self, kernel: ManagedKernel) -> None:
        for sub in self._kernel_subs.pop(kernel.id, []):
            await sub.unsubscribe()

    # --- handlers -------------------------------------------------------------------------

    async def _start(self, command: StartKernel, msg: Msg) -> KernelReply:
        revalidate_start(command)
        return KernelReply(kernel=await self.supervisor.start(command))

    async def _resource(self, command: GetResource, msg: Msg) -> ResourceReply:
        return self.catalog.resource(command.kernel_name, command.file)

    async def _command(
        self, command: InterruptKernel | RestartKernel | ShutdownKernel, msg: Msg
    ) -> KernelReply:
        if command.kernel_id not in msg.subject:
            raise BadRequest("kernel_id does not match the subject")
        if isinstance(command, InterruptKernel):
            record = await self.supervisor.interrupt(command.kernel_id)
        elif isinstance(command, RestartKernel):
            record = await self.supervisor.restart(command.kernel_id, command.kernel_info_timeout)
        else:
            record = await self.supervisor.shutdown(command.kernel_id, command.reason)
        return KernelReply(kernel=record)

    async def _attach(self, command: AttachConnection | DetachConnection, msg: Msg) -> KernelReply:
        if msg.subject != subjects.kernel_attach(command.kernel_id):
            raise BadRequest("kernel_id does not match the subject")
        kernel = self.supervisor.get(command.kernel_id)
        if isinstance(command, DetachConnection):
            kernel.detach(command.conn_id)
            return KernelReply(kernel=kernel.record)
        replaced = kernel.same_session(command.session_id)
        again = next((a for a in replaced if a.conn_id == command.conn_id), None)
        owed = kernel.attach(command.conn_id, command.session_id, command.api_instance)
        if again is not None and not kernel.waiting_for(command.conn_id):
            # Re-attached after its replica's own reconnect, while this worker stayed on the
            # bus: resend what the replica may have missed meanwhile.
            since = max(again.attached_at, self.liveness.last_seen.get(again.api_instance, 0.0))
            kernel.resume_for(command.conn_id, since)
            # At once (no task): nothing may expire the new hold before its catch-up began.
            await kernel.catch_up(command.conn_id)
        for stale in replaced:
            if stale.conn_id == command.conn_id:
                continue
            if stale.api_instance and stale.api_instance != command.api_instance:
                self._spawn(self._recover(kernel, stale, command.conn_id))
        if owed:
            # Published after the reply; the api holds connection traffic until it accepted.
            self._spawn(self._replay(kernel, command.conn_id, owed))
        if kernel.waiting_for(command.conn_id):
            self._spawn(self._catch_up(kernel, command.conn_id))
        return AttachReply(kernel=kernel.record, replayed=len(owed))

    async def _recover(self, kernel: ManagedKernel, stale: Attached, conn_id: str) -> None:
        """A client came back through another api replica while its old connection looked
        open: if that replica is dead, send what it may not have delivered."""
        if await self.liveness.alive(stale.api_instance):
            return
        since = max(stale.attached_at, self.liveness.last_seen.get(stale.api_instance, 0.0))
        frames = kernel.sent_to(stale.conn_id, since)
        kernel.log.info("Recovering %d messages sent to a lost connection", len(frames))
        await self._replay(kernel, conn_id, frames)

    async def _catch_up(self, kernel: ManagedKernel, conn_id: str) -> None:
        await kernel.catch_up(conn_id)

    async def _replay(self, kernel: ManagedKernel, conn_id: str, frames: list[bytes]) -> None:
        for frame in frames:
            await kernel.outbox.publish(subjects.connection(conn_id), frame)

    def _as_task(
        self, handler: Callable[[Msg], Awaitable[None]]
    ) -> Callable[[Msg], Awaitable[None]]:
        async def spawn(msg: Msg) -> None:
            self._spawn(handler(msg))

        return spawn

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def revalidate_start(command: StartKernel) -> None:
    """Check a start as the api does before anything runs: whoever can publish on the bus is
    not trusted to have gone through the api (`kernelbus.kernelenv`)."""
    check_request_env(command.env)
    if command.username is not None:
        check_value("KERNEL_USERNAME", command.username)
    if command.working_dir is not None:
        check_value("KERNEL_WORKING_DIR", command.working_dir)
