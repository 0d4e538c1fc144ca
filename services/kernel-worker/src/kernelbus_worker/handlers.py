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
from kernelbus_worker.connections import Attached
from kernelbus_worker.kernel import ManagedKernel
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
        bridge = kernel.bridge
        inputs = kernel.inputs
        reassembler = chunking.Reassembler()

        async def on_input(msg: Msg) -> None:
            frame = reassembler.feed(msg.headers, msg.data)
            if frame is None:
                return
            sent = subjects.parse_input_reply(msg.reply)
            if sent is not None and not inputs.receive(sent.conn_id, sent.seq):
                kernel.log.info(
                    "dropped client message %d of %s: it arrived before", sent.seq, sent.conn_id
                )
                return
            metrics.relayed(metrics.TO_KERNEL, len(frame))
            await bridge.from_client(frame, sent.conn_id if sent is not None else None)

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
            kernel.connections.detach(command.conn_id)
            kernel.inputs.forget(command.conn_id)
            return KernelReply(kernel=kernel.record)
        # Before anything changes (a ping may take a while): which api replicas holding an
        # older connection of this session are gone. What they may not have delivered is
        # replayed, and counted in the reply, so that the api puts it before live output.
        lost = await self._lost_replicas(kernel, command)
        kernel = self.supervisor.get(command.kernel_id)
        table = kernel.connections
        missing = kernel.inputs.attached(command.conn_id, command.inputs_sent, command.inputs_kept)
        if missing:
            kernel.log.warning(
                "%d client messages of %s never arrived: the api sends them again",
                len(missing),
                command.conn_id,
            )
        replaced = table.same_session(command.session_id)
        again = next((a for a in replaced if a.conn_id == command.conn_id), None)
        recovered = [
            frame
            for stale in replaced
            if stale.api_instance in lost
            for frame in table.sent_to(stale.conn_id, self._since(stale))
        ]
        if recovered:
            kernel.log.info("Recovering %d messages sent to a lost connection", len(recovered))
        owed = table.attach(command.conn_id, command.session_id, command.api_instance)
        if again is not None and not table.waiting_for(command.conn_id):
            # Re-attached after its replica's own reconnect, while this worker stayed on the
            # bus: resend what the replica may have missed meanwhile.
            table.resume_for(command.conn_id, self._since(again))
            # At once (no task): nothing may expire the new hold before its catch-up began.
            await kernel.bridge.catch_up(command.conn_id)
        replay = owed + recovered
        if replay:
            # What is owed is older than what the kernel sends from now on: hold the new
            # output for this connection (a hold that starts empty) until it went out first.
            table.hold_for(command.conn_id)
        if table.waiting_for(command.conn_id) and table.begin_catch_up(command.conn_id):
            # Claimed now, with no await since the hold began: nothing expires it meanwhile.
            # Published after the reply; the api holds connection traffic until it accepted.
            self._spawn(self._replay_then_live(kernel, command.conn_id, replay))
        elif replay:  # a catch-up of this connection runs: it goes live after it
            self._spawn(self._replay(kernel, command.conn_id, replay))
        return AttachReply(kernel=kernel.record, replayed=len(replay), inputs_missing=missing)

    async def _lost_replicas(self, kernel: ManagedKernel, command: AttachConnection) -> set[str]:
        """The api replicas, other than the attaching one, that hold an open connection of
        the attaching session and are certainly gone."""
        others = {
            stale.api_instance
            for stale in kernel.connections.same_session(command.session_id)
            if stale.conn_id != command.conn_id
            and stale.api_instance
            and stale.api_instance != command.api_instance
        }
        return {api for api in others if not await self.liveness.alive(api)}

    def _since(self, attached: Attached) -> float:
        """Since when a connection's replica may not have delivered what it was sent."""
        return max(attached.attached_at, self.liveness.last_seen.get(attached.api_instance, 0.0))

    async def _replay_then_live(
        self, kernel: ManagedKernel, conn_id: str, replay: list[bytes]
    ) -> None:
        """In order: what is owed (`_replay`), then the output held meanwhile (`catch_up`,
        claimed by the caller), after which the connection is live."""
        try:
            await self._replay(kernel, conn_id, replay)
        finally:
            await kernel.bridge.catch_up(conn_id, begun=True)

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
