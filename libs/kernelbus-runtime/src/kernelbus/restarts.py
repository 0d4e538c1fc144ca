"""Making the launcher's restarts visible: a counter per process at the launcher's `/metrics`
and a `service_restarted` event on the bus."""

from __future__ import annotations

import asyncio
import logging
import socket

from nats.aio.client import Client
from prometheus_client import Counter

from kernelbus import bus, events, tinyhttp
from kernelbus.eventpublisher import EventPublisher
from kernelbus.metrics import CONTENT_TYPE, new_registry, render
from kernelbus.settings import BusSettings
from kernelbus.supervision import Restart

log = logging.getLogger(__name__)


class RestartReporter:
    """Counts restarts and announces each one; the event is queued and published (retried
    while NATS is away, e.g. right after the nats-server itself was restarted)."""

    def __init__(self, names: list[str]) -> None:
        self.registry = new_registry()
        self.restarts = Counter(
            "kernelbus_launcher_restarts_total",
            "Processes the embedded launcher restarted after they exited unasked.",
            labelnames=("service",),
            registry=self.registry,
        )
        for name in names:
            self.restarts.labels(service=name)
        self._nc: Client | None = None
        self._publisher: EventPublisher | None = None
        self._server: asyncio.Server | None = None

    async def connect(self, nats_url: str, login: dict[str, str]) -> None:
        """Connect as the launcher's own NATS user (`login`: NATS_USER / NATS_PASSWORD)."""
        settings = BusSettings(
            nats_url=nats_url, nats_user=login["NATS_USER"], nats_password=login["NATS_PASSWORD"]
        )
        self._nc = await bus.connect(settings, name="kernelbus-launcher", role="launcher")
        nc = self._nc
        self._publisher = await EventPublisher.open(
            nc.jetstream(), source="launcher", connected=lambda: nc.is_connected
        )

    async def serve(self, port: int) -> str:
        """Serve `/metrics` on 127.0.0.1:`port` (0: a free one); returns its URL."""
        self._server = await tinyhttp.serve(self._route, "127.0.0.1", port)
        bound = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{bound}/metrics"

    def _route(self, method: str, path: str) -> tinyhttp.Response:
        if path == "/metrics":
            return 200, CONTENT_TYPE, render(self.registry)
        return 404, "text/plain", "not found\n"

    async def report(self, restart: Restart) -> None:
        self.restarts.labels(service=restart.service).inc()
        if self._publisher is None:
            return
        await self._publisher.emit(
            events.SERVICE_RESTARTED,
            {
                "service": restart.service,
                "exit_code": restart.exit_code,
                "restarts": restart.restarts,
                "delay": restart.delay,
                "pid": restart.pid,
                "hostname": socket.gethostname(),
            },
        )

    async def close(self, timeout: float = 3.0) -> None:
        """Publish what is queued (at most `timeout` s), then close the connection and server."""
        if self._publisher is not None:
            await self._publisher.close(timeout)
        if self._nc is not None:
            await bus.close(self._nc)
        if self._server is not None:
            self._server.close()
