"""Liveness for compose and orchestrators: a tiny HTTP endpoint (`KERNELBUS_CULLER_HEALTH_PORT`,
0 = off). `GET /health/live` answers 200 while the service's loops make progress, else 503.

Deliberately not a web framework: the culler serves nothing else, and a raw asyncio server
keeps it one dependency lighter.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kernelbus import tinyhttp


@dataclass
class Liveness:
    """Loops call `beat()`; the service is live while the last beat is younger than `max_age`."""

    max_age: float
    last: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last = time.monotonic()

    def ok(self) -> bool:
        return time.monotonic() - self.last < self.max_age


def route_for(liveness: Liveness) -> tinyhttp.Route:
    """`GET /health/live`: 200 while the loops make progress, 503 when they stalled."""

    def route(method: str, path: str) -> tinyhttp.Response:
        if path != "/health/live":
            return 404, "text/plain", "not found"
        return (200, "text/plain", "ok") if liveness.ok() else (503, "text/plain", "stalled")

    return route


async def serve(liveness: Liveness, host: str, port: int) -> asyncio.Server:
    return await tinyhttp.serve(route_for(liveness), host, port)
