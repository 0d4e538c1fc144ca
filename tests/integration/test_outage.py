"""Services through a NATS outage: nats-server stopped and restarted on the same port and store.

What clients see while the bus is down and after it returns (docs/bus-protocol.md, "NATS
outages"): REST answers 503 at once, readiness says why, websockets keep working across the
restart, output produced meanwhile arrives in order, the culler judges nothing by the gap.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import pytest
from channels_support import (
    KernelSocket,
    Msg,
    execute,
    of_request,
    start_kernel,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kernelbus import bus, natsserver
from kernelbus.processes import kill_orphaned_kernels
from kernelbus.settings import BusSettings
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
    outage: Outage, services: Services
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
    url = f"{api.ws_url}/api/kernels/{kernel['id']}/channels?session_id=s"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=api.headers, open_timeout=5):
            pass
    assert refused.value.response.status_code == 503
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


COUNTER = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


def printed_values(msgs: list[Msg], msg_id: str) -> list[int]:
    text = "".join(
        m["content"]["text"]
        for m in of_request(msgs, msg_id)
        if m["header"]["msg_type"] == "stream"
    )
    return [int(line) for line in text.split()]


async def test_websocket_opened_before_a_nats_restart_gets_all_output_in_order_and_keeps_working(
    outage: Outage, services: Services
) -> None:
    """A cell prints a counter every 0.1 s while nats-server is stopped for ~6 s and restarted
    on the same port and store: the websocket opened before stays open, gets every value in
    order (none lost, none twice), and executes code afterwards."""
    services.worker(nats_url=outage.url)
    api = services.api(nats_url=outage.url)
    kernel_id = await start_kernel(api)
    url = f"{api.ws_url}/api/kernels/{kernel_id}/channels?session_id=outage-session"
    async with connect(url, additional_headers=api.headers) as ws:
        sock = KernelSocket(ws, v1=False)
        await sock.run("x = 41")
        total = 120
        msg_id = await sock.send(execute(COUNTER.format(n=total)))
        seen = await sock.until(lambda m: _printed(m, msg_id, "5"))
        outage.stop()
        await wait_until(lambda: _reason_mentions(api, "NATS"), "the api to notice the outage")
        # Sent while the bus is down: held by the api until the websocket is re-attached.
        during = await sock.send(execute("x + 1"))
        # Keep the bus down while the kernel goes on printing (the outage being tested).
        await asyncio.sleep(6)
        outage.restart()
        seen += await sock.until_finished(msg_id, timeout=90)
        values = printed_values(seen, msg_id)
        assert values == list(range(total)), f"lost or repeated: {_gaps(values, total)}"
        after = seen + await sock.until_finished(during, timeout=60)
        results = [
            m for m in of_request(after, during) if m["header"]["msg_type"] == "execute_result"
        ]
        assert results[0]["content"]["data"]["text/plain"] == "42"
    async with http(api) as client:
        assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204


async def test_idle_websocket_survives_a_nats_restart_when_the_worker_reconnects_first(
    outage: Outage, services: Services
) -> None:
    """The reported bug: after NATS returned, the worker's first ping of the api found no
    responder (the api had not reconnected and re-subscribed yet) and dropped the api's
    connections, so a websocket opened before the outage stayed open but never got a reply
    again. The api is paused (SIGSTOP) across the restart so the worker surely comes first."""
    worker = services.worker({"KERNELBUS_WORKER_API_CHECK_INTERVAL": "0.2"}, nats_url=outage.url)
    api = services.api(nats_url=outage.url)
    kernel_id = await start_kernel(api)
    url = f"{api.ws_url}/api/kernels/{kernel_id}/channels?session_id=idle-session"
    async with connect(url, additional_headers=api.headers) as ws:
        sock = KernelSocket(ws, v1=False)
        await sock.run("y = 1")
        outage.stop()
        await wait_until(lambda: _reason_mentions(api, "NATS"), "the api to notice the outage")
        os.kill(api.service.pid, signal.SIGSTOP)
        try:
            outage.restart()
            await wait_until(
                lambda: "reconnected to nats" in worker.log(), "the worker to reconnect"
            )
            # Several api checks (0.2 s apart) find no responder while the api is paused.
            await asyncio.sleep(1.5)
        finally:
            os.kill(api.service.pid, signal.SIGCONT)
        await wait_until(lambda: _ready(api), "the api to be ready again")
        after = await sock.run("y + 1", timeout=30)
        results = [m for m in after if m["header"]["msg_type"] == "execute_result"]
        assert results[0]["content"]["data"]["text/plain"] == "2"
    async with http(api) as client:
        assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204


def _printed(msg: Msg, msg_id: str, value: str) -> bool:
    if msg["parent_header"].get("msg_id") != msg_id or msg["header"]["msg_type"] != "stream":
        return False
    return value in str(msg["content"]["text"]).split()


def _gaps(values: list[int], total: int) -> str:
    missing = sorted(set(range(total)) - set(values))
    repeated = len(values) - len(set(values))
    return f"missing {missing[:20]} ({len(missing)}), repeated {repeated}, got {len(values)}"


async def test_culler_declares_no_worker_lost_because_of_an_outage(
    outage: Outage, services: Services
) -> None:
    """NATS is down longer than a heartbeat TTL, so every heartbeat has aged out of the store
    when it returns; the worker is paused across the restart so the culler looks first. The
    culler waits to have been connected for a TTL before judging, and declares nothing."""
    worker = services.worker(nats_url=outage.url)
    api = services.api(nats_url=outage.url)
    kernel_id = await start_kernel(api)
    culler = services.spawn(
        "kernelbus-culler",
        {
            "KERNELBUS_CULLER_WORKER_CHECK_INTERVAL": "0.5",
            "KERNELBUS_CULLER_CULL_IDLE_TIMEOUT": "0",
        },
        outage.url,
    )
    steady = "judging workers and kernels again"
    await wait_until(lambda: steady in culler.log(), "the culler to start judging")
    outage.stop()
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: "disconnected from nats" in culler.log(), "the culler to notice")
        await asyncio.sleep(11)  # the outage: longer than the heartbeat TTL (10 s)
        outage.restart()
        await wait_until(lambda: "reconnected to nats" in culler.log(), "the culler to reconnect")
        await asyncio.sleep(2)  # several worker checks (0.5 s) while the worker is still away
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    await wait_until(lambda: culler.log().count(steady) == 2, "the culler to judge again")
    await asyncio.sleep(2)  # several more checks, now judging
    assert "heartbeat expired" not in culler.log()
    async with http(api) as client:
        model = (await client.get(f"/api/kernels/{kernel_id}")).json()
        assert model["execution_state"] != "dead", model
        assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204


async def test_a_service_connection_reconnects_after_more_than_its_connect_attempts(
    outage: Outage,
) -> None:
    """The initial connect is bounded (NATS_CONNECT_ATTEMPTS); reconnecting after that is
    not: an outage longer than those attempts is still rejoined."""
    settings = BusSettings(nats_url=outage.url, nats_connect_attempts=1)
    connectivity = bus.Connectivity()
    nc = await bus.connect(settings, name="outage-test", connectivity=connectivity)
    try:
        outage.stop()
        await wait_until(lambda: not connectivity.connected, "the disconnect")
        await asyncio.sleep(3)  # six reconnect attempts (0.5 s apart) fail meanwhile
        outage.restart()
        await wait_until(lambda: connectivity.connected, "the reconnect", timeout=30)
        assert connectivity.outages == 1
        await nc.publish("kb.test", b"still usable")
        await nc.flush(timeout=5)
    finally:
        await bus.close(nc)


async def test_websocket_of_a_worker_lost_during_the_outage_is_closed_to_reconnect(
    outage: Outage, services: Services
) -> None:
    """The kernel's worker dies while NATS is down: once NATS is back the api cannot re-attach
    the websocket, and closes it with 1012 (service restart) so the client reconnects and
    learns the kernel's fate from REST, instead of leaving it open and dead."""
    worker = services.worker(nats_url=outage.url)
    api = services.api(nats_url=outage.url)
    kernel_id = await start_kernel(api)
    url = f"{api.ws_url}/api/kernels/{kernel_id}/channels?session_id=orphan"
    async with connect(url, additional_headers=api.headers) as ws:
        sock = KernelSocket(ws, v1=False)
        await sock.run("1")
        outage.stop()
        await wait_until(lambda: _reason_mentions(api, "NATS"), "the api to notice the outage")
        worker.kill()
        outage.restart()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await sock.recv(timeout=90)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    kill_orphaned_kernels(services.runtime_dir)
