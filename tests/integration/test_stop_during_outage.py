"""A service told to stop while NATS is down stops by itself, soon.

An operator stops a stack whose bus is gone (the NATS host died, `docker compose stop` of
everything, Ctrl-C under `make run` after nats-server crashed). What a service would say on
the bus on its way out (the worker leaving the registry, its `worker_stopped` event) cannot be
said; waiting for it would only end in the SIGKILL of `docker compose stop` (10 s) or of the
launcher. Each service must exit on SIGTERM by itself within that grace, and log what it
could not say.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, wait_for
from kernelbus.testing.plugin import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STOP_GRACE = 10.0
"""`docker compose stop`'s default grace: the SIGKILL after it is what this test rules out."""


def _start_all(services: Services, root: Path) -> list[ServiceProcess]:
    worker = services.worker()
    api = services.api()
    culler_port = natsserver.free_port()
    culler = services.spawn("kernelbus-culler", {"KERNELBUS_CULLER_HEALTH_PORT": str(culler_port)})
    wait_for(lambda: "ready" in culler.log(), 60, "the culler", culler)
    events_port = natsserver.free_port()
    events = services.spawn(
        "kernelbus-events",
        {
            "KERNELBUS_EVENTS_PORT": str(events_port),
            "KERNELBUS_EVENTS_DB_PATH": str(root / "events.sqlite"),
        },
    )
    ready = f"http://127.0.0.1:{events_port}/api/health/ready"
    wait_for(lambda: _ok(ready), 60, "the events service", events)
    # A kernel, so that the worker has something to shut down (and registry writes to make).
    with httpx.Client(base_url=api.url, headers=api.headers, timeout=60) as http:
        response = http.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
    return [api.service, worker, culler, events]


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _sees_outage(process: ServiceProcess) -> None:
    wait_for(lambda: "disconnected from nats" in process.log(), 30, "the outage", process)


def test_every_service_stops_by_itself_on_sigterm_while_nats_is_down(
    services: Services, fresh_nats: natsserver.NatsServer, tmp_path: Path
) -> None:
    services.nats_url = fresh_nats.url
    started = _start_all(services, tmp_path)
    fresh_nats.stop()
    for process in started:
        _sees_outage(process)
    took: dict[str, float] = {}
    killed: list[str] = []
    for process in started:
        began = time.monotonic()
        if not process.stop(timeout=STOP_GRACE):
            killed.append(f"{process.name}:\n{process.log()[-3000:]}")
        took[process.name] = round(time.monotonic() - began, 2)
    print(f"stop during a NATS outage, seconds per service: {took}")
    logs = "\n".join(killed)
    assert not killed, f"needed SIGKILL after {STOP_GRACE:.0f} s:\n{logs}"
    # The worker did not wait out a registry request it knew could not be answered.
    assert "cannot leave the registry: not connected to NATS" in started[1].log()
