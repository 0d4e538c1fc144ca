"""Publishing kernel messages onto NATS, chunked when larger than the server's max_payload."""

from __future__ import annotations

from typing import cast

from kernelbus import chunking
from kernelbus.bus_types import Client


class Outbox:
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def publish(self, subject: str, frame: bytes) -> None:
        limit = self.nc.max_payload
        if len(frame) <= limit - chunking.HEADROOM:
            await self.nc.publish(subject, frame)
            return
        for headers, piece in chunking.split_views(frame, limit):
            # nats-py only takes len() of the payload and appends it to its command bytes.
            await self.nc.publish(subject, cast(bytes, piece), headers=headers)
