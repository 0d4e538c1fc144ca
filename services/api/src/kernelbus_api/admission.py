"""`max_kernels` and `max_kernels_per_user`, enforced across every api replica.

Kernels counted = registry records plus in-flight starts (reservation keys in KV `kb_starts`).
An admission reads the `gate` key's revision, counts, writes its reservation, then advances
the gate with compare-and-set: of two replicas admitting at once only one CAS succeeds; the
other withdraws its reservation and counts again, now seeing the winner's reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from kernelbus.bus_kv import Bucket, KeyChanged
from kernelbus.errors import BusTimeout, CapacityExceeded
from kernelbus.registry import Registry

_GATE = "gate"
_PREFIX = "start."
_ATTEMPTS = 50


class Reservation(BaseModel):
    kernel_id: str
    username: str | None = None
    deadline: float


@dataclass
class Admission:
    kv: Bucket
    registry: Registry
    max_kernels: int | None
    max_per_user: int | None

    @property
    def enabled(self) -> bool:
        return self.max_kernels is not None or self.max_per_user is not None

    @contextlib.asynccontextmanager
    async def reserve(
        self, kernel_id: str, username: str | None, timeout: float
    ) -> AsyncIterator[None]:
        """Hold a slot for a start while it runs; 403 Resource Limit when none is free."""
        if not self.enabled:
            yield
            return
        await self._admit(
            Reservation(kernel_id=kernel_id, username=username, deadline=time.time() + timeout)
        )
        try:
            yield
        finally:
            await self._release(kernel_id)

    async def _admit(self, reservation: Reservation) -> None:
        for _ in range(_ATTEMPTS):
            revision = await self._gate_revision()
            await self._check(reservation.username)
            key = _PREFIX + reservation.kernel_id
            await self.kv.put(key, reservation.model_dump_json().encode())
            if await self._advance(revision):
                return
            await self._release(reservation.kernel_id)
            # Contention with another replica: back off a little, randomly, and count again.
            await asyncio.sleep(random.uniform(0.001, 0.02))
        raise BusTimeout("too much contention admitting kernel starts; try again")

    async def _check(self, username: str | None) -> None:
        owners = {r.id: r.username for r in await self.registry.kernel_summaries()}
        for res in await self._reservations():
            owners.setdefault(res.kernel_id, res.username)
        if self.max_kernels is not None and len(owners) >= self.max_kernels:
            raise CapacityExceeded("Resource Limit")
        if self.max_per_user is not None and username is not None:
            mine = sum(1 for owner in owners.values() if owner == username)
            if mine >= self.max_per_user:
                raise CapacityExceeded("Resource Limit")

    async def _reservations(self) -> list[Reservation]:
        found = []
        now = time.time()
        for key in await self.kv.keys():
            if not key.startswith(_PREFIX):
                continue
            res = await self._read(key)
            if res is not None and res.deadline > now:
                found.append(res)
        return found

    async def _read(self, key: str) -> Reservation | None:
        entry = await self.kv.get(key)
        if entry is None:
            return None
        try:
            return Reservation.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def _gate_revision(self) -> int:
        for _ in range(3):
            gate = await self.kv.get(_GATE)
            if gate is not None:
                return gate.revision
            with contextlib.suppress(KeyChanged):  # another replica created it meanwhile
                return await self.kv.create(_GATE, b"0")
        raise BusTimeout("cannot read the admission gate")

    async def _advance(self, revision: int) -> bool:
        try:
            await self.kv.update(_GATE, str(time.time()).encode(), last=revision)
        except KeyChanged:
            return False
        return True

    async def _release(self, kernel_id: str) -> None:
        await self.kv.purge(_PREFIX + kernel_id)
