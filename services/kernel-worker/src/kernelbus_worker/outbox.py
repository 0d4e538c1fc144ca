"""Publishing kernel messages onto NATS, chunked when larger than the server's max_payload."""

from __future__ import annotations

from kernelbus import bus
from kernelbus.bus_types import Client


class Outbox:
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def publish(self, subject: str, frame: bytes) -> None:
        await bus.publish_frame(self.nc, subject, frame)
