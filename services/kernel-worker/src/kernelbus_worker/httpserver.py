"""The worker's tiny HTTP endpoint (`KERNELBUS_WORKER_METRICS_PORT`, 0 = off):
`GET /metrics` (Prometheus text format) and `GET /health/live` (compose's healthcheck).

A raw asyncio server rather than a web framework: two read-only routes, no body parsing.
It starts after the worker announced itself ready, so answering at all means live.
"""

from __future__ import annotations

import asyncio
import logging

from kernelbus import tinyhttp
from kernelbus.metrics import CONTENT_TYPE, render
from kernelbus_worker import metrics
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.supervisor import Supervisor

log = logging.getLogger(__name__)
ROUTES = ("/metrics", "/health/live")


def route(method: str, path: str) -> tinyhttp.Response:
    if path == "/metrics":
        return 200, CONTENT_TYPE, render(metrics.REGISTRY)
    if path == "/health/live":
        return 200, "application/json", '{"status": "ok"}'
    return 404, "text/plain", "not found\n"


async def start(settings: WorkerSettings, supervisor: Supervisor) -> asyncio.Server | None:
    """Bind and serve (None when the port is 0); the caller closes the server.

    Bound during start-up, so a port that cannot be bound fails the worker's start clearly
    instead of leaving it running without its health endpoint.
    """
    if not settings.metrics_port:
        return None
    metrics.KERNELS_RUNNING.set_function(lambda: float(supervisor.running))
    metrics.POOLED_KERNELS.set_function(lambda: float(len(supervisor.pool)))
    metrics.POOL_TARGET.set_function(lambda: float(sum(supervisor.pool.targets().values())))
    server = await tinyhttp.serve(route, settings.metrics_ip, settings.metrics_port)
    log.info(
        "metrics on http://%s:%d/metrics",
        settings.metrics_ip,
        settings.metrics_port,
        extra={"worker_id": settings.id},
    )
    return server
