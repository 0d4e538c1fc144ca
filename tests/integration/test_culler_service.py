"""The culler as users meet it: real worker, api and culler processes on a private
nats-server, real ipykernel kernels, real HTTP and websocket clients.

Every "spared" assertion waits for the culler's own debug line saying it looked at the kernel
past its timeout and kept it, so no test sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kernelbus import bus, events, natsserver, subjects
from kernelbus.processes import ServiceProcess, wait_for
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings
from kernelbus.testing.plugin import ApiProcess, Services
from kernelbus.testing.waiting import until

pytestmark = pytest.mark.integration

FAST = {
    "KERNELBUS_CULLER_CULL_IDLE_TIMEOUT": "3",
    "KERNELBUS_CULLER_CULL_INTERVAL": "1",
    "KERNELBUS_CULLER_COMMAND_TIMEOUT": "20",
    "KERNELBUS_CULLER_WORKER_CHECK_INTERVAL": "1",
    "KERNELBUS_LOG_LEVEL": "DEBUG",
}


@dataclass
class Stack:
    services: Services
    nats_url: str
    api: ApiProcess
    worker: ServiceProcess
    culled: list[dict[str, Any]] = field(default_factory=list)

    def culler(self, **env: str) -> ServiceProcess:
        process = self.services.spawn("kernelbus-culler", {**FAST, **env}, self.nats_url)
        wait_for(lambda: "ready" in process.log(), 60, "the culler", process)
        return process

    def culled_events(self, kernel_id: str) -> list[dict[str, Any]]:
        return [e for e in self.culled if e["kernel_id"] == kernel_id]


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private nats-server: a culler acts on every kernel of its registry."""
    root = tmp_path_factory.mktemp("culler-nats")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_services(
    tmp_path_factory: pytest.TempPathFactory, module_nats: str
) -> Iterator[tuple[Services, ApiProcess, ServiceProcess]]:
    started = Services(Path(tmp_path_factory.mktemp("culler-stack")), module_nats)
    try:
        worker = started.worker()
        api = started.api()
        yield started, api, worker
    finally:
        started.stop_all()


@pytest.fixture
async def stack(
    module_services: tuple[Services, ApiProcess, ServiceProcess], module_nats: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    _, api, worker = module_services
    cullers = Services(tmp_path, module_nats)
    state = Stack(cullers, module_nats, api, worker)
    nc = await bus.connect(BusSettings(nats_url=module_nats), name="culler-test")

    async def on_culled(msg: Msg) -> None:
        state.culled.append(json.loads(msg.data))

    await nc.subscribe(subjects.event_subject(events.KERNEL_CULLED), cb=on_culled)
    await nc.flush()
    try:
        yield state
    finally:
        cullers.stop_all()
        await _delete_all(api)
        await nc.drain()


async def _delete_all(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        for model in (await http.get("/api/kernels")).json():
            await http.delete(f"/api/kernels/{model['id']}")


async def start_kernel(api: ApiProcess) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        response = await http.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def kernel_status(api: ApiProcess, kernel_id: str) -> int:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        return (await http.get(f"/api/kernels/{kernel_id}")).status_code


async def until_gone(api: ApiProcess, kernel_id: str) -> None:
    async def gone() -> bool:
        return await kernel_status(api, kernel_id) == 404

    await until(gone, 60, f"kernel {kernel_id} to be culled")


def kept_lines(culler: ServiceProcess, kernel_id: str, why: str) -> int:
    return culler.log().count(f"kernel {kernel_id} kept: {why}")


async def until_kept(culler: ServiceProcess, kernel_id: str, why: str, times: int = 2) -> None:
    await until(lambda: kept_lines(culler, kernel_id, why) >= times, 60, f"'{why}' verdicts")


def ws_url(api: ApiProcess, kernel_id: str) -> str:
    return f"{api.ws_url}/api/kernels/{kernel_id}/channels?token={api.token}"


def execute(code: str) -> str:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "username": "test",
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": "2026-11-22T00:00:00.000000Z",
    }
    content = {"code": code, "silent": False}
    return json.dumps(
        {"header": header, "parent_header": {}, "metadata": {}, "content": content, "buffers": []}
        | {"channel": "shell"}
    )


async def until_status(ws: ClientConnection, state: str) -> None:
    async def seen() -> None:
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("msg_type") == "status" and msg["content"]["execution_state"] == state:
                return

    await asyncio.wait_for(seen(), 60)


async def make_busy(api: ApiProcess, kernel_id: str) -> None:
    """Run `time.sleep(30)` through a legacy-protocol websocket, then disconnect."""
    async with connect(ws_url(api, kernel_id)) as ws:
        await ws.send(execute("import time; time.sleep(30)"))
        await until_status(ws, "busy")


async def test_idle_kernel_is_culled_and_event_published(stack: Stack) -> None:
    culler = stack.culler()
    kernel_id = await start_kernel(stack.api)
    await until_gone(stack.api, kernel_id)
    await until(lambda: stack.culled_events(kernel_id), 30, "the kernel_culled event")
    event = stack.culled_events(kernel_id)[0]
    assert event["reason"] == "idle" and event["idle_seconds"] > 3
    assert f"kernel 'python3' ({kernel_id}) with 0 connections due to" in culler.log()


async def test_busy_kernel_is_spared(stack: Stack) -> None:
    culler = stack.culler()
    kernel_id = await start_kernel(stack.api)
    await make_busy(stack.api, kernel_id)
    await until_kept(culler, kernel_id, "busy")
    assert await kernel_status(stack.api, kernel_id) == 200
    assert stack.culled_events(kernel_id) == []


async def test_busy_kernel_is_culled_with_cull_busy(stack: Stack) -> None:
    stack.culler(KERNELBUS_CULLER_CULL_BUSY="true")
    kernel_id = await start_kernel(stack.api)
    await make_busy(stack.api, kernel_id)
    await until_gone(stack.api, kernel_id)
    await until(lambda: stack.culled_events(kernel_id), 30, "the kernel_culled event")
    assert stack.culled_events(kernel_id)[0]["execution_state"] == "busy"


async def test_connected_kernel_is_spared(stack: Stack) -> None:
    culler = stack.culler()
    kernel_id = await start_kernel(stack.api)
    async with connect(ws_url(stack.api, kernel_id)):
        await until_kept(culler, kernel_id, "connected")
        assert await kernel_status(stack.api, kernel_id) == 200


async def test_connected_kernel_culled_with_cull_connected_client_sees_it(stack: Stack) -> None:
    stack.culler(KERNELBUS_CULLER_CULL_CONNECTED="true")
    kernel_id = await start_kernel(stack.api)
    async with connect(ws_url(stack.api, kernel_id)) as ws:
        await until_gone(stack.api, kernel_id)
        await _dead_status_or_close(ws)
    assert stack.culled_events(kernel_id)[0]["connections"] == 1


async def _dead_status_or_close(ws: ClientConnection) -> None:
    async def watch() -> None:
        try:
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("msg_type") == "status" and msg["content"]["execution_state"] == "dead":
                    return
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the socket was not closed cleanly"

    await asyncio.wait_for(watch(), 60)


async def test_culler_killed_and_restarted_still_culls_once(stack: Stack) -> None:
    first = stack.culler(KERNELBUS_CULLER_CULL_IDLE_TIMEOUT="6", KERNELBUS_CULLER_CULLER_ID="c-r")
    kernel_id = await start_kernel(stack.api)
    await until_kept(first, kernel_id, "recently active", times=1)
    first.kill()
    assert await kernel_status(stack.api, kernel_id) == 200
    stack.culler(KERNELBUS_CULLER_CULL_IDLE_TIMEOUT="6", KERNELBUS_CULLER_CULLER_ID="c-r")
    await until_gone(stack.api, kernel_id)
    await until(lambda: stack.culled_events(kernel_id), 30, "the kernel_culled event")


async def test_two_replicas_cull_one_kernel_once(stack: Stack) -> None:
    replicas = [stack.culler(KERNELBUS_CULLER_CULLER_ID=f"rep-{i}") for i in (1, 2)]
    kernel_ids = [await start_kernel(stack.api) for _ in range(3)]
    for kernel_id in kernel_ids:
        await until_gone(stack.api, kernel_id)
    # Both replicas have since run full passes over a registry without these kernels.
    marks = [r.log().count("culling pass done") for r in replicas]
    await until(
        lambda: all(
            r.log().count("culling pass done") >= m + 2
            for r, m in zip(replicas, marks, strict=True)
        ),
        30,
        "two more passes of each replica",
    )
    for kernel_id in kernel_ids:
        assert len(stack.culled_events(kernel_id)) == 1


async def test_lost_worker_marks_kernels_dead_then_they_are_culled(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    url = fresh_nats.url
    worker = services.worker(nats_url=url)
    api = services.api(nats_url=url)
    nc = await bus.connect(BusSettings(nats_url=url), name="culler-test")
    lost: list[dict[str, Any]] = []

    async def on_lost(msg: Msg) -> None:
        lost.append(json.loads(msg.data))

    await nc.subscribe(subjects.event_subject(events.WORKER_LOST), cb=on_lost)
    await nc.flush()
    kernel_id = await start_kernel(api)
    record = await (await Registry.open(nc.jetstream())).get_kernel(kernel_id)
    assert record is not None and record.pid is not None
    try:
        watcher = services.spawn(
            "kernelbus-culler", {**FAST, "KERNELBUS_CULLER_CULL_IDLE_TIMEOUT": "0"}, url
        )
        wait_for(lambda: "ready" in watcher.log(), 60, "the culler", watcher)
        async with connect(ws_url(api, kernel_id)) as ws:
            worker.kill()
            await until_status(ws, "dead")
        model = await until_model(api, kernel_id, lambda m: m["execution_state"] == "dead")
        assert model["reason"] == f"worker {record.worker_id} lost"
        await until(lambda: lost, 30, "the worker_lost event")
        assert lost[0]["worker_id"] == record.worker_id and lost[0]["kernel_ids"] == [kernel_id]
        services.spawn("kernelbus-culler", FAST, url)
        await until_gone(api, kernel_id)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        await nc.drain()


async def until_model(
    api: ApiProcess, kernel_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll GET /api/kernels/{id} until its model satisfies `check`; return that model."""
    found: list[dict[str, Any]] = []

    async def matches() -> bool:
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            response = await http.get(f"/api/kernels/{kernel_id}")
        if response.status_code == 200 and check(response.json()):
            found.append(response.json())
        return bool(found)

    await until(matches, 60, "the kernel model")
    return found[0]


async def test_health_endpoint_answers_while_live(stack: Stack) -> None:
    port = natsserver.free_port()
    stack.culler(KERNELBUS_CULLER_HEALTH_PORT=str(port), KERNELBUS_CULLER_CULL_IDLE_TIMEOUT="0")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/elsewhere")).status_code == 404
