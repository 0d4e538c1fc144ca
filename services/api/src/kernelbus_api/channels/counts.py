"""This replica's open websockets per kernel, kept in KV (`kb_connections`).

Re-put every `REFRESH` seconds while any are open: the bucket's TTL (30 s) then ages out the
counts of a replica that died without cleaning up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from kernelbus.bounded import within
from kernelbus.registry import Registry
from kernelbus.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REFRESH = 10.0


@dataclass
class ConnectionCounts:
    registry: Registry
    api_instance: str
    refresh: float = REFRESH
    _counts: Counter[str] = field(default_factory=Counter)
    _task: asyncio.Task[None] | None = None

    async def add(self, kernel_id: str) -> None:
        self._counts[kernel_id] += 1
        await self._write(kernel_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_loop())

    async def remove(self, kernel_id: str) -> None:
        self._counts[kernel_id] -= 1
        if self._counts[kernel_id] <= 0:
            del self._counts[kernel_id]
        await self._write(kernel_id)

    def count(self, kernel_id: str) -> int:
        return self._counts.get(kernel_id, 0)

    async def _write(self, kernel_id: str) -> None:
        count = self.count(kernel_id)
        try:
            # Bounded: a websocket's open must not wait out a leader election (ADR 0023).
            await within(self.registry.set_connections(kernel_id, self.api_instance, count))
        except Exception as exc:  # KV trouble must not break a websocket; the refresh retries
            log.warning("cannot record connections of %s: %s", kernel_id, exc)

    async def _refresh_loop(self) -> None:
        """Runs while this replica has open websockets; ends by itself after the last."""
        while self._counts:
            await asyncio.sleep(self.refresh)
            for kernel_id in list(self._counts):
                await self._write(kernel_id)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
