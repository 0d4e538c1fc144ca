"""Publishing kernel messages onto NATS, chunked when larger than the server's max_payload."""

from __future__ import annotations

from nats.aio.client import Client

from kernelbus import chunking


class Outbox:
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def publish(self, subject: str, frame: bytes) -> None:
        limit = self.nc.max_payload
        if len(frame) <= limit - chunking.HEADROOM:
            await self.nc.publish(subject, frame)
            return
        for headers, piece in chunking.split(frame, limit):
            await self.nc.publish(subject, piece, headers=headers)
