"""Noticing api replicas that died without detaching their websockets.

Every `api_check_interval` the worker pings each api replica that holds a connection to one of
its kernels (`kb.api.<instance>.ping`). A replica that is gone has no subscription left, so
NATS answers "no responders" at once: its connections are dropped and, when they were a
kernel's last, their session starts buffering, seeded with what was sent to them since the
replica's last answer. The reconnecting client (on any replica) gets all of it replayed.

No answer proves nothing while the worker's own bus connection is down or was re-established
less than `settle` seconds ago: after a NATS restart the replicas reconnect (and re-subscribe)
in no particular order. Until then nobody is judged; after it, connections the bus outage
held output for and that were not re-attached are handed to their session's replay buffer.
"""

from __future__ import annotations

import json
import logging
import time

from kernelbus import bus, subjects
from kernelbus.bus_types import Client
from kernelbus_worker.supervisor import Supervisor

log = logging.getLogger(__name__)


class ApiLiveness:
    def __init__(
        self,
        nc: Client,
        supervisor: Supervisor,
        connectivity: bus.Connectivity,
        settle: float,
        timeout: float = 2.0,
    ) -> None:
        self.nc = nc
        self.supervisor = supervisor
        self.connectivity = connectivity
        self.settle = settle
        self.timeout = timeout
        self.last_seen: dict[str, float] = {}

    def settled(self) -> bool:
        """A missing responder means a missing replica: never during an outage, and after one
        only once every replica has had time to reconnect (at start, at once)."""
        if self.connectivity.outages == 0:
            return self.connectivity.connected
        return self.connectivity.steady_for(self.settle)

    async def check(self) -> None:
        if not self.settled():
            return
        self.supervisor.expire_holds()
        instances = {
            api
            for kernel in self.supervisor.kernels.values()
            for api in (a.api_instance for a in kernel.connections.attached.values())
            if api
        }
        for instance in instances:
            await self._check(instance)
        for gone in set(self.last_seen) - instances:
            del self.last_seen[gone]

    async def resume_held(self) -> None:
        """After this worker's own reconnect: ask each api replica with connections this
        worker holds output for to re-attach them (`subjects.api_ping` with a
        `{"reattach": [conn_id, ...]}` payload). In a NATS cluster the lost node may have been
        the worker's only: such a replica stayed connected, so it would never re-attach by
        itself, and its websockets would wait until the hold expired. A replica re-attaches
        only the connections it still has open (the hold of a closed one expires into its
        session's replay buffer, as before); one that does not answer is reconnecting too (it
        re-attaches everything itself) or gone (judged later)."""
        waiting: dict[str, list[str]] = {}
        for kernel in list(self.supervisor.kernels.values()):
            for attached in list(kernel.connections.attached.values()):
                if attached.api_instance and kernel.connections.waiting_for(attached.conn_id):
                    waiting.setdefault(attached.api_instance, []).append(attached.conn_id)
        for instance, conn_ids in waiting.items():
            payload = json.dumps({"reattach": conn_ids}).encode()
            subject = subjects.api_ping(instance)
            if not await bus.ping(self.nc, subject, self.timeout, payload):
                log.info("api %s did not answer the request to re-attach", instance)

    async def reclaim(self, replicas: dict[str, set[str]], kernel_ids: list[str]) -> None:
        """After re-adopting `kernel_ids` (their websockets were attached to the crashed
        worker, unknown here): ask each api replica that recorded websockets on them
        (`replicas`, from the registry) to re-attach those (`{"reattach_kernels": [...]}`).
        From then on this worker knows their sessions and replicas, so that it keeps their
        output if such a replica dies too (ADR 0008); until then the kernels' unclaimed
        buffers keep it (`ConnectionTable.buffer_unclaimed`)."""
        wanted: dict[str, list[str]] = {}
        for kernel_id in kernel_ids:
            for instance in replicas.get(kernel_id, ()):
                wanted.setdefault(instance, []).append(kernel_id)
        for instance, kernels in wanted.items():
            payload = json.dumps({"reattach_kernels": kernels}).encode()
            if not await bus.ping(self.nc, subjects.api_ping(instance), self.timeout, payload):
                log.info("api %s did not answer the request to re-attach", instance)

    async def alive(self, instance: str) -> bool:
        """False only when the replica is certainly gone (no responder); slow counts as alive."""
        asked = time.monotonic()
        answered = await bus.ping(self.nc, subjects.api_ping(instance), self.timeout)
        if answered is False:
            return not self.settled()
        if answered:
            self.last_seen[instance] = asked
        return True  # answered, or unknown (a timeout, or the bus went down meanwhile)

    async def _check(self, instance: str) -> None:
        if not await self.alive(instance):
            self._lost(instance)

    def _lost(self, instance: str) -> None:
        seen = self.last_seen.pop(instance, 0.0)
        for kernel in self.supervisor.kernels.values():
            lost = [a for a in kernel.connections.attached.values() if a.api_instance == instance]
            if lost:
                kernel.log.warning("api %s is gone: dropping %d connections", instance, len(lost))
                since = max(seen, min(a.attached_at for a in lost))
                kernel.connections.drop_lost([a.conn_id for a in lost], since)
