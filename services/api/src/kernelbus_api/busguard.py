"""REST during a NATS outage: a fast 503, never a hang.

nats-py does not fail requests in flight when the connection drops: it buffers them and they
time out seconds later. This ASGI middleware races every HTTP request against the bus going
down. A request still unanswered `GRACE` seconds after the bus went down (or after it arrived
during an outage) is cancelled and answered 503 `{message, reason}`; routes that do not need
the bus (`/api`, liveness, the OpenAPI document) answer well within the grace and are
unaffected. Websockets are refused during an outage by their handshake instead.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernelbus import bus
from kernelbus_api.errors import error_response

GRACE = 0.25
"""Seconds a request may still take once the bus is down (bus-free routes need far less)."""


class BusGuard:
    def __init__(self, app: ASGIApp, grace: float = GRACE) -> None:
        self.app = app
        self.grace = grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connectivity = _connectivity(scope)
        if scope["type"] != "http" or connectivity is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def serve() -> None:
            await self.app(scope, receive, tracked)

        handler = asyncio.create_task(serve())
        cutoff = asyncio.create_task(self._cutoff(connectivity))
        try:
            await asyncio.wait({handler, cutoff}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cutoff.cancel()
        if handler.done() or started:
            await handler  # finished, or its response is already under way
            return
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await handler
        response = error_response(503, connectivity.reason() or bus.UNAVAILABLE)
        await response(scope, receive, send)

    async def _cutoff(self, connectivity: bus.Connectivity) -> None:
        await connectivity.down.wait()
        await asyncio.sleep(self.grace)


def _connectivity(scope: Scope) -> bus.Connectivity | None:
    """The app's connectivity once its lifespan opened the bus (None before)."""
    app = scope.get("app")
    state = getattr(getattr(app, "state", None), "kb", None)
    connectivity = getattr(state, "connectivity", None)
    return connectivity if isinstance(connectivity, bus.Connectivity) else None
