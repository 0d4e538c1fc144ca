"""A minimal HTTP/1.1 server for the read-only endpoints of services that are not web apps
(the worker's /metrics and /health/live, the culler's /health/live): one request line in, one
response out, connection closed. No framework, no body parsing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

Response = tuple[int, str, str]
"""(status, content type, body)."""

Route = Callable[[str, str], Response]
"""(method, path without query) -> response."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def render(response: Response) -> bytes:
    status, content_type, body = response
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


def answer(route: Route, request_line: bytes) -> bytes:
    parts = request_line.decode("latin-1").split()
    if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
        return render((405, "text/plain", "method not allowed\n"))
    return render(route(parts[0], parts[1].split("?", 1)[0]))


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line; the headers are read and ignored, so closing never resets."""
    request_line = await reader.readline()
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        del line
    return request_line


async def serve(route: Route, host: str, port: int) -> asyncio.Server:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(_read_head(reader), 5)
            writer.write(answer(route, request_line))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(on_client, host, port)
