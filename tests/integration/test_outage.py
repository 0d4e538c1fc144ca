"""Services through a NATS outage: nats-server stopped and restarted on the same port and store.

What clients see while the bus is down and after it returns (docs/bus-protocol.md, "NATS
outages"): REST answers 503 at once, readiness says why, websockets keep working across the
restart, output produced meanwhile arrives in order, the culler judges nothing by the gap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import pytest

from kernelbus import natsserver
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KID = "4db5d35c-712c-4b42-a85b-0c07964f8e3f"


@dataclass
class Outage:
    """Stops the test's nats-server and starts it again on the same port and store."""

    server: natsserver.NatsServer
    restarted: natsserver.NatsServer | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        (self.restarted or self.server).stop()

    def restart(self) -> None:
        self.restarted = natsserver.start(
            self.server.store_dir,
            port=self.server.port,
            log_file=self.server.store_dir.parent / "nats-restarted.log",
        )

    def close(self) -> None:
        if self.restarted is not None:
            self.restarted.stop()


@pytest.fixture
def outage(fresh_nats: natsserver.NatsServer) -> Iterator[Outage]:
    o = Outage(fresh_nats)
    try:
        yield o
    finally:
        o.close()


async def wait_until(check: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Poll an (a)sync condition until it holds; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def http(api: ApiProcess, timeout: float = 60) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=timeout) as c:
        yield c


async def ready_reason(api: ApiProcess) -> tuple[int, str]:
    try:
        async with http(api, timeout=5) as client:
            response = await client.get("/api/health/ready")
    except httpx.HTTPError:
        return 0, ""
    return response.status_code, str(response.json().get("reason", ""))


@contextmanager
def timed(durations: dict[str, float], name: str) -> Iterator[None]:
    began = time.monotonic()
    yield
    durations[name] = time.monotonic() - began


REST_CALLS = [
    ("GET", "/api/kernels", None),
    ("POST", "/api/kernels", {"name": "python3"}),
    ("GET", f"/api/kernels/{KID}", None),
    ("DELETE", f"/api/kernels/{KID}", None),
    ("POST", f"/api/kernels/{KID}/interrupt", {}),
    ("POST", f"/api/kernels/{KID}/restart", {}),
    ("GET", "/api/kernelspecs", None),
    ("GET", "/api/kernelspecs/python3", None),
    ("GET", "/kernelspecs/python3/logo-64x64.png", None),
    ("GET", "/api/sessions", None),
    ("POST", "/api/sessions", {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "x"}}),
    ("GET", f"/api/sessions/{KID}", None),
]


async def test_rest_answers_503_at_once_while_nats_is_down_and_recovers(
    services: Services, outage: Outage
) -> None:
    services.worker(nats_url=outage.url)
    api = services.api(nats_url=outage.url)
    async with http(api) as client:
        kernel = (await client.post("/api/kernels", json={"name": "python3"})).json()
    await wait_until(lambda: _ready(api), "the api to be ready")
    outage.stop()
    await wait_until(
        lambda: _reason_mentions(api, "NATS"), "readiness to report the disconnected bus"
    )
    durations: dict[str, float] = {}
    # A client timeout well above the 1 s target: a hang fails the test instead of stalling it.
    async with http(api, timeout=5) as client:
        assert (await client.get("/api/health/live")).status_code == 200
        assert (await client.get("/api")).status_code == 200
        calls = [*REST_CALLS, ("GET", f"/api/kernels/{kernel['id']}", None)]
        for method, path, body in calls:
            with timed(durations, f"{method} {path}"):
                response = await client.request(method, path, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert set(response.json()) == {"message", "reason"}, (method, path)
            assert response.json()["reason"] == "Service Unavailable"
            assert "NATS" in response.json()["message"], (method, path)
    print("503 latencies during the outage (s):", {k: round(v, 3) for k, v in durations.items()})
    outage.restart()
    await wait_until(lambda: _ready(api), "the api to be ready again", timeout=60)
    async with http(api) as client:
        listing = await client.get("/api/kernels")
        assert listing.status_code == 200
        assert [k["id"] for k in listing.json()] == [kernel["id"]]
        assert (await client.delete(f"/api/kernels/{kernel['id']}")).status_code == 204


async def _ready(api: ApiProcess) -> bool:
    return (await ready_reason(api))[0] == 200


async def _reason_mentions(api: ApiProcess, word: str) -> bool:
    status, reason = await ready_reason(api)
    return status == 503 and word in reason
