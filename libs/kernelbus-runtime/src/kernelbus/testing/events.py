"""Test helpers for the events service: start it as a real process, query what it stored."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, wait_for


class _Spawner(Protocol):
    def spawn(
        self, name: str, env: dict[str, str] | None = None, nats_url: str | None = None
    ) -> ServiceProcess: ...


@dataclass
class EventsProcess:
    service: ServiceProcess
    url: str
    token: str
    env: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def query(self, **params: Any) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}/api/events", params=params, headers=self.headers, timeout=10
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def all_events(self, **params: Any) -> list[dict[str, Any]]:
        """Every stored event matching `params`, following the cursor page by page."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.query(**params, after=after, limit=500)
            found.extend(page["events"])
            after = page["cursor"]
            if not page["more"]:
                return found

    def stats(self) -> dict[str, int]:
        response = httpx.get(f"{self.url}/api/events/stats", headers=self.headers, timeout=10)
        response.raise_for_status()
        result: dict[str, int] = response.json()
        return result

    def wait_for_events(
        self, count: int, timeout: float = 30, **params: Any
    ) -> list[dict[str, Any]]:
        """Poll until at least `count` events match; returns them."""
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            nonlocal found
            found = self.all_events(**params)
            return len(found) >= count

        wait_for(enough, timeout, f"{count} stored events matching {params}", self.service, 0.1)
        return found


def start_events_service(
    spawner: _Spawner,
    db_path: Path,
    token: str = "test-token",
    nats_url: str | None = None,
    consumer: str = "kernelbus-events",
    port: int | None = None,
) -> EventsProcess:
    """Spawn `kernelbus-events` and return once `/api/health/ready` answers 200."""
    port = port or natsserver.free_port()
    env = {
        "KERNELBUS_EVENTS_PORT": str(port),
        "KERNELBUS_EVENTS_IP": "127.0.0.1",
        "KERNELBUS_EVENTS_DB_PATH": str(db_path),
        "KERNELBUS_EVENTS_CONSUMER": consumer,
        "KERNELBUS_AUTH_TOKEN": token,
    }
    process = spawner.spawn("kernelbus-events", env, nats_url)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(f"{url}/api/health/ready"), 60, "the events service", process)
    return EventsProcess(process, url, token, env)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def restart(spawner: _Spawner, old: EventsProcess, nats_url: str | None = None) -> EventsProcess:
    """A new events process (on a new port) with the same database and consumer as `old`."""
    deadline = time.monotonic() + 10
    while old.service.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return start_events_service(
        spawner,
        Path(old.env["KERNELBUS_EVENTS_DB_PATH"]),
        old.token,
        nats_url,
        old.env["KERNELBUS_EVENTS_CONSUMER"],
    )
