"""The worker's tiny HTTP endpoint (`KERNELBUS_WORKER_METRICS_PORT`, 0 = off):
`GET /metrics` (Prometheus text format) and `GET /health/live` (compose's healthcheck).

A raw asyncio server rather than a web framework: two read-only routes, no body parsing.
It starts after the worker announced itself ready, so answering at all means live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kernelbus.metrics import CONTENT_TYPE
from kernelbus_worker import metrics
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.supervisor import Supervisor

log = logging.getLogger(__name__)
ROUTES = ("/metrics", "/health/live")


def respond(request_line: bytes) -> bytes:
    """The whole HTTP/1.1 response to one request line."""
    parts = request_line.decode("latin-1").split()
    if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
        return _http(405, "text/plain", "method not allowed\n")
    path = parts[1].split("?", 1)[0]
    if path == "/metrics":
        return _http(200, CONTENT_TYPE, metrics.REGISTRY.render())
    if path == "/health/live":
        return _http(200, "application/json", '{"status": "ok"}')
    return _http(404, "text/plain", "not found\n")


def _http(status: int, content_type: str, body: str) -> bytes:
    data = body.encode()
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line; the headers are read and ignored, so closing never resets."""
    request_line = await reader.readline()
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        del line
    return request_line


async def _on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request_line = await asyncio.wait_for(_read_head(reader), 5)
        writer.write(respond(request_line))
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(settings: WorkerSettings, supervisor: Supervisor) -> None:
    """Serve until cancelled (the worker cancels it on shutdown); nothing when the port is 0."""
    if not settings.metrics_port:
        return
    metrics.KERNELS_RUNNING.read = lambda: float(supervisor.running)
    server = await asyncio.start_server(_on_client, settings.metrics_ip, settings.metrics_port)
    log.info(
        "metrics on http://%s:%d/metrics",
        settings.metrics_ip,
        settings.metrics_port,
        extra={"worker_id": settings.id},
    )
    async with server:
        await server.serve_forever()
