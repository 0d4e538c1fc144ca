"""The api's Prometheus series and `GET /metrics` (behind the api token, like every route but
health: Prometheus sends it with `authorization: {type: token, credentials: ...}`).

Counted at the ASGI edge, so no route or websocket handler knows about metrics: websocket
connections, frames and bytes relayed each way, and kernel starts (`POST /api/kernels`):
successes with their latency, failures by HTTP status.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernelbus.metrics import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    new_registry,
    register_unchecked,
    render,
)
from kernelbus_api.auth import require_token
from kernelbus_api.settings import ApiSettings

REGISTRY = new_registry()
WS_OPEN = Gauge("kernelbus_api_websocket_connections", "Open kernel websockets.", registry=None)
register_unchecked(REGISTRY, WS_OPEN)  # its name beside WS_ACCEPTED's: see register_unchecked
WS_ACCEPTED = Counter(
    "kernelbus_api_websocket_connections_total", "Kernel websockets accepted.", registry=REGISTRY
)
MESSAGES = Counter(
    "kernelbus_api_messages_relayed_total",
    "Websocket messages relayed.",
    ("direction",),
    registry=REGISTRY,
)
BYTES = Counter(
    "kernelbus_api_bytes_relayed_total",
    "Websocket message bytes relayed.",
    ("direction",),
    registry=REGISTRY,
)
STARTS = Counter(
    "kernelbus_api_kernel_starts_total", "Kernels started (HTTP 201).", registry=REGISTRY
)
START_FAILURES = Counter(
    "kernelbus_api_kernel_start_failures_total",
    "Kernel starts refused or failed.",
    ("status",),
    registry=REGISTRY,
)
START_SECONDS = Histogram(
    "kernelbus_api_kernel_start_seconds",
    "Seconds a successful POST /api/kernels took.",
    buckets=DEFAULT_BUCKETS,
    registry=REGISTRY,
)
_DIRECTIONS = ("from_clients", "to_clients")
# The children per direction, looked up once rather than per websocket frame.
_MESSAGES = {d: MESSAGES.labels(direction=d) for d in _DIRECTIONS}
_BYTES = {d: BYTES.labels(direction=d) for d in _DIRECTIONS}

router = APIRouter(dependencies=[Depends(require_token)])


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
async def metrics() -> PlainTextResponse:
    """Prometheus metrics of this api replica (text exposition format 0.0.4)."""
    return PlainTextResponse(render(REGISTRY), media_type=CONTENT_TYPE)


def _frame_size(message: Message) -> int:
    """Bytes of a websocket message; an ASCII text's length without encoding it (`isascii`
    is a flag lookup: a 20 MB legacy frame is not copied to be counted)."""
    data = message.get("bytes") or message.get("text") or b""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode())
    return len(data)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, starts_path: str) -> None:
        self.app = app
        self.starts_path = starts_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http" and self._is_start(scope):
            await self._start(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _is_start(self, scope: Scope) -> bool:
        return bool(scope["method"] == "POST" and scope["path"].rstrip("/") == self.starts_path)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                _relayed("from_clients", message)
            return message

        async def send_counted(message: Message) -> None:
            nonlocal accepted
            await send(message)
            if message["type"] == "websocket.accept":
                accepted = True
                WS_ACCEPTED.inc()
                WS_OPEN.inc()
            elif message["type"] == "websocket.send":
                _relayed("to_clients", message)

        try:
            await self.app(scope, receive_counted, send_counted)
        finally:
            if accepted:
                WS_OPEN.dec()

    async def _start(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.monotonic()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            _count_start(status, time.monotonic() - began)


def _relayed(direction: str, message: Message) -> None:
    _MESSAGES[direction].inc()
    _BYTES[direction].inc(_frame_size(message))


def _count_start(status: int, seconds: float) -> None:
    if 200 <= status < 300:
        STARTS.inc()
        START_SECONDS.observe(seconds)
    else:
        START_FAILURES.labels(status=str(status)).inc()


def install(app: FastAPI, settings: ApiSettings) -> None:
    """Serve `/metrics` under the base URL and count at the ASGI edge."""
    app.include_router(router, prefix=settings.prefix)
    app.add_middleware(MetricsMiddleware, starts_path=f"{settings.prefix}/api/kernels")
