"""Liveness for compose and orchestrators: a tiny HTTP endpoint (`KERNELBUS_CULLER_HEALTH_PORT`,
0 = off). `GET /health/live` answers 200 while the service's loops make progress, else 503.

Deliberately not a web framework: the culler serves nothing else, and a raw asyncio server
keeps it one dependency lighter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass
class Liveness:
    """Loops call `beat()`; the service is live while the last beat is younger than `max_age`."""

    max_age: float
    last: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last = time.monotonic()

    def ok(self) -> bool:
        return time.monotonic() - self.last < self.max_age


async def serve(liveness: Liveness, host: str, port: int) -> asyncio.Server:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            writer.write(_response(request_line, liveness))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(on_client, host, port)


def _response(request_line: bytes, liveness: Liveness) -> bytes:
    parts = request_line.decode("latin-1").split()
    if len(parts) < 2 or parts[0] != "GET" or parts[1] != "/health/live":
        return _http(404, "not found")
    return _http(200, "ok") if liveness.ok() else _http(503, "stalled")


def _http(status: int, body: str) -> bytes:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()
