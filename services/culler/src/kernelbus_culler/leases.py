"""Culling leases in the `kb_cull` KV bucket, so that with several culler replicas one kernel
is culled (and one lost worker reported) once.

A lease is created with `Bucket.create` (fails when the key exists), kept after a successful cull
(the kernel is gone; a replica with an older view re-reads the registry and finds nothing) and
swept once older than `max_age`, which also frees kernels whose culler died mid-cull.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from kernelbus.bus_kv import Bucket, KeyChanged
from kernelbus.timefmt import utcnow

log = logging.getLogger(__name__)


class CullLease(BaseModel):
    """The value of a lease: who holds it and since when."""

    model_config = ConfigDict(extra="forbid")

    culler_id: str
    taken_at: datetime


@dataclass
class Leases:
    kv: Bucket
    owner: str

    async def take(self, key: str) -> bool:
        """True when this culler now holds the lease on `key` (created, or already its own)."""
        value = CullLease(culler_id=self.owner, taken_at=utcnow()).model_dump_json().encode()
        try:
            await self.kv.create(key, value)
            return True
        except KeyChanged:
            return await self._retake_own(key, value)

    async def _retake_own(self, key: str, value: bytes) -> bool:
        """A replica restarted with the same id may finish what it started."""
        current = await self._read(key)
        if current is None or current[0] is None or current[0].culler_id != self.owner:
            return False
        try:
            await self.kv.update(key, value, last=current[1])
            return True
        except KeyChanged:
            return False

    async def release(self, key: str) -> None:
        """Give a lease back (the kernel turned out not to need culling)."""
        await self.kv.purge(key)

    async def sweep(self, max_age: float, now: datetime | None = None) -> int:
        """Delete leases older than `max_age` seconds (or unreadable); returns how many."""
        now = now or utcnow()
        swept = 0
        for key in await self.kv.keys():
            current = await self._read(key)
            if current is None:
                continue
            lease, revision = current
            if lease is None or (now - lease.taken_at).total_seconds() > max_age:
                swept += await self._delete_if_unchanged(key, revision)
        return swept

    async def _delete_if_unchanged(self, key: str, revision: int) -> int:
        try:
            await self.kv.delete(key, last=revision)
            return 1
        except KeyChanged:
            return 0

    async def _read(self, key: str) -> tuple[CullLease | None, int] | None:
        entry = await self.kv.get(key)
        if entry is None:
            return None
        try:
            return CullLease.model_validate_json(entry.value), entry.revision
        except ValidationError:
            log.warning("unreadable cull lease under key %s; treating it as stale", key)
            return None, entry.revision
