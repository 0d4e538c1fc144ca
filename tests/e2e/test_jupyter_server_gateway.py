"""A stock `jupyter server --gateway-url` in front of Kernelbus, driven ONLY through
jupyter_server's own REST and websocket API (as JupyterLab would): kernelspecs, a kernel's
whole life (execute, input, interrupt, restart, shutdown), a session, error statuses, and the
relay's reconnect when the api goes away (PROTOCOLS §3)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, pid_stopped, spawn, wait_for
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.e2e

JS_TOKEN = "js-token"
API_TOKEN = "gateway-token"
Message = dict[str, Any]
RECEIVE_TIMEOUT = 60  # a failing test reports what it waited for instead of hanging


@dataclass
class Gateway:
    """jupyter_server (what the test talks to) and the Kernelbus api behind it."""

    url: str
    api: ApiProcess
    server: ServiceProcess
    worker: ServiceProcess

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {JS_TOKEN}"}

    def logs(self) -> str:
        """The tails of jupyter_server's and the api's logs, for a failure's message."""
        tails = (
            f"--- {p.name}\n{p.log()[-3000:]}" for p in (self.server, self.api.service, self.worker)
        )
        return "\n".join(tails)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=60)

    def api_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api.url, headers=self.api.headers, timeout=60)


def _jupyter_server_command(
    api: ApiProcess, port: int, root: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    return [
        str(Path(sys.executable).parent / "jupyter-server"),
        f"--GatewayClient.url={api.url}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={JS_TOKEN}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI containers often run as root
        *extra,
    ]


def _status_ok(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/status", params={"token": JS_TOKEN}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _start_gateway(services: Services, tmp: Path, extra: tuple[str, ...] = ()) -> Gateway:
    """A worker, an api, and a stock jupyter_server pointed at that api (own port and token)."""
    worker = services.worker()
    api = services.api(token=API_TOKEN)
    port = natsserver.free_port()
    root = tmp / "root"
    root.mkdir()
    env = {"JUPYTER_GATEWAY_AUTH_TOKEN": api.token}
    server = spawn(
        "jupyter-server", _jupyter_server_command(api, port, root, extra), env, tmp / "logs"
    )
    services.started.append(server)  # stopped by pid with the rest
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _status_ok(url), 60, "jupyter server", server)
    return Gateway(url, api, server, worker)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Gateway]:
    """The stack shared by this module's tests that leave it as they found it."""
    tmp = tmp_path_factory.mktemp("js-gateway")
    services = Services(tmp, nats_url)
    try:
        yield _start_gateway(services, tmp)
    finally:
        services.stop_all()


# --- a legacy-protocol websocket client, as JupyterLab's relay through jupyter_server -------


@dataclass
class Channels:
    """One legacy (JSON text frame) websocket to jupyter_server's kernel channels."""

    ws: ClientConnection
    logs: Callable[[], str] = str  # what to show when the socket falls silent
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    username: str = "e2e"

    def message(self, msg_type: str, content: Message, channel: str = "shell") -> Message:
        header = {
            "msg_id": uuid.uuid4().hex,
            "username": self.username,
            "session": self.session,
            "msg_type": msg_type,
            "version": "5.3",
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        return {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": content,
            "buffers": [],
            "channel": channel,
        }

    async def send(self, msg_type: str, content: Message, channel: str = "shell") -> str:
        msg = self.message(msg_type, content, channel)
        await self.ws.send(json.dumps(msg))
        return str(msg["header"]["msg_id"])

    async def execute(self, code: str, allow_stdin: bool = False) -> str:
        content = {"code": code, "silent": False, "allow_stdin": allow_stdin}
        return await self.send("execute_request", content)

    async def receive(self) -> Message:
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                frame = await self.ws.recv()
        except TimeoutError:
            raise AssertionError(f"no message for {RECEIVE_TIMEOUT} s\n{self.logs()}") from None
        assert isinstance(frame, str), "jupyter_server relays text frames only"
        msg: Message = json.loads(frame)
        return msg

    async def next_of(self, parent_id: str, msg_type: str) -> Message:
        """The next message of `msg_type` answering `parent_id` (others are skipped)."""
        while True:
            msg = await self.receive()
            if msg["parent_header"].get("msg_id") == parent_id and msg["msg_type"] == msg_type:
                return msg

    async def until_done(self, parent_id: str) -> list[Message]:
        """Every message of a request until both its reply and its `idle` status arrived."""
        seen: list[Message] = []
        replied = idle = False
        while not (replied and idle):
            msg = await self.receive()
            if msg["parent_header"].get("msg_id") != parent_id:
                continue
            seen.append(msg)
            replied = replied or msg["msg_type"].endswith("_reply")
            idle = idle or _is_idle(msg)
        return seen

    async def run(self, code: str) -> list[Message]:
        return await self.until_done(await self.execute(code))


def _is_idle(msg: Message) -> bool:
    return bool(msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle")


def _of_type(messages: list[Message], msg_type: str) -> list[Message]:
    return [m for m in messages if m["msg_type"] == msg_type]


def _reply(messages: list[Message]) -> Message:
    (reply,) = _of_type(messages, "execute_reply")
    assert reply["channel"] == "shell"
    return reply


async def _open_channels(gateway: Gateway, kernel_id: str) -> ClientConnection:
    url = gateway.url.replace("http://", "ws://", 1)
    return await websockets.connect(
        f"{url}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
        additional_headers=gateway.headers,
        max_size=None,
    )


async def _kernelbus_ids(gateway: Gateway) -> set[str]:
    async with gateway.api_client() as api:
        response = await api.get("/api/kernels")
    assert response.status_code == 200, response.text
    return {k["id"] for k in response.json()}


@pytest.fixture
async def kernel(gateway: Gateway) -> AsyncIterator[str]:
    """A kernel started through jupyter_server; deleted through it afterwards if still there."""
    async with gateway.client() as client:
        response = await client.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        kernel_id = str(response.json()["id"])
        try:
            yield kernel_id
        finally:
            await client.delete(f"/api/kernels/{kernel_id}")


async def _until_kernel_info(channels: Channels, tries: int = 12, every: float = 5.0) -> None:
    """What JupyterLab does on connecting: kernel_info_request until a reply arrives (resent,
    as jupyter_server's own nudge resends it, in case the first one is sent before the relay's
    upstream websocket is through)."""
    for _ in range(tries):
        msg_id = await channels.send("kernel_info_request", {})
        deadline = asyncio.get_running_loop().time() + every
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                frame = await asyncio.wait_for(channels.ws.recv(), left)
            except TimeoutError:
                break
            msg = json.loads(frame)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"].endswith("reply"):
                return
    raise AssertionError(f"no kernel_info_reply in {tries * every:.0f} s\n{channels.logs()}")


@pytest.fixture
async def channels(gateway: Gateway, kernel: str) -> AsyncIterator[Channels]:
    ws = await _open_channels(gateway, kernel)
    try:
        opened = Channels(ws, gateway.logs)
        await _until_kernel_info(opened)
        yield opened
    finally:
        await ws.close()


# --- tests -----------------------------------------------------------------------------------


async def test_kernelspecs_come_from_the_gateway_with_resources_rerooted(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        response = await client.get("/api/kernelspecs")
        assert response.status_code == 200, response.text
        python3 = response.json()["kernelspecs"]["python3"]
        assert python3["spec"]["language"] == "python"
        logo = python3["resources"]["logo-64x64"]
        # jupyter_server re-roots resource URLs at its own base URL, not the gateway's.
        assert logo == "/kernelspecs/python3/logo-64x64.png"
        fetched = await client.get(logo)
    assert fetched.status_code == 200
    assert fetched.content.startswith(b"\x89PNG")
    # Served from the gateway, not from jupyter_server's own disk (its fallback on a 404).
    assert 'GET /kernelspecs/python3/logo-64x64.png HTTP/1.1" 200' in gateway.api.service.log()


async def test_stream_result_and_error_through_jupyter_server(channels: Channels) -> None:
    printed = await channels.run("print('hello from kernelbus')")
    assert [m["content"]["text"] for m in _of_type(printed, "stream")] == ["hello from kernelbus\n"]
    assert _reply(printed)["content"]["status"] == "ok"

    result = await channels.run("6 * 7")
    (value,) = _of_type(result, "execute_result")
    assert value["channel"] == "iopub"
    assert value["content"]["data"]["text/plain"] == "42"

    failed = await channels.run("1/0")
    (error,) = _of_type(failed, "error")
    assert error["content"]["ename"] == "ZeroDivisionError"
    assert _reply(failed)["content"]["status"] == "error"


AT_ONCE_ROUNDS = 5


async def test_an_execute_sent_at_once_is_answered(gateway: Gateway) -> None:
    """A client may execute the moment its websocket is open, with no kernel_info first
    (nothing accepted is lost): on a kernel just started, and on a second connection."""
    async with gateway.client() as client:
        for _ in range(AT_ONCE_ROUNDS):
            response = await client.post("/api/kernels", json={"name": "python3"})
            assert response.status_code == 201, response.text
            kernel_id = response.json()["id"]
            try:
                for code, shown in (("6 * 7", "42"), ("6 * 8", "48")):
                    ws = await _open_channels(gateway, kernel_id)
                    try:
                        done = await Channels(ws, gateway.logs).run(code)
                    finally:
                        await ws.close()
                    (value,) = _of_type(done, "execute_result")
                    assert value["content"]["data"]["text/plain"] == shown
                    assert _reply(done)["content"]["status"] == "ok"
            finally:
                await client.delete(f"/api/kernels/{kernel_id}")


async def test_an_execute_sent_at_once_after_nats_stalled_is_answered(
    fresh_nats: natsserver.NatsServer, tmp_path: Path
) -> None:
    """NATS stalls for a moment, as on a loaded machine (here: SIGSTOP for longer than the
    worker's 2 s keeper-sync flush). The late PONG once left the worker's NATS client not
    reading (nats-py's flush timeout), and the next execute was never answered."""
    services = Services(tmp_path, fresh_nats.url)
    try:
        gateway = _start_gateway(services, tmp_path)
        async with gateway.client() as client:
            response = await client.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        kernel_id = response.json()["id"]
        pid = fresh_nats.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: pid_stopped(pid), 30, "the stop")
            await asyncio.sleep(STALL)  # the fault injected, not an expectation
        finally:
            os.kill(fresh_nats.process.pid, signal.SIGCONT)
        ws = await _open_channels(gateway, kernel_id)
        try:
            done = await Channels(ws, gateway.logs).run("6 * 7")
        finally:
            await ws.close()
        (value,) = _of_type(done, "execute_result")
        assert value["content"]["data"]["text/plain"] == "42"
    finally:
        services.stop_all()


STALL = 4.0


async def test_input_request_is_answered_with_input_reply(channels: Channels) -> None:
    msg_id = await channels.execute("answer = input('name? ')\nprint('got', answer)", True)
    request = await channels.next_of(msg_id, "input_request")
    assert request["channel"] == "stdin"
    assert request["content"]["prompt"] == "name? "
    await channels.send("input_reply", {"value": "kernelbus"}, channel="stdin")
    done = await channels.until_done(msg_id)
    assert "got kernelbus\n" in [m["content"]["text"] for m in _of_type(done, "stream")]
    assert _reply(done)["content"]["status"] == "ok"


async def test_interrupt_stops_a_long_sleep(
    gateway: Gateway, kernel: str, channels: Channels
) -> None:
    # Wait for the cell's own output: an interrupt between execute_input and the user's code
    # is swallowed by ipykernel ("KeyboardInterrupt caught in kernel"), with no reply at all.
    msg_id = await channels.execute("import time; print('sleeping', flush=True); time.sleep(60)")
    await channels.next_of(msg_id, "stream")  # the kernel is running the user's code now
    async with gateway.client() as client:
        response = await client.post(f"/api/kernels/{kernel}/interrupt")
    assert response.status_code == 204, response.text
    done = await channels.until_done(msg_id)
    (error,) = _of_type(done, "error")
    assert error["content"]["ename"] == "KeyboardInterrupt"
    assert _reply(done)["content"]["status"] == "error"


async def test_restart_forgets_variables(gateway: Gateway, kernel: str, channels: Channels) -> None:
    assert _reply(await channels.run("before_restart = 1"))["content"]["status"] == "ok"
    async with gateway.client() as client:
        response = await client.post(f"/api/kernels/{kernel}/restart")
    assert response.status_code == 200, response.text
    after = await channels.run("before_restart")
    (error,) = _of_type(after, "error")
    assert error["content"]["ename"] == "NameError"


async def test_shutdown_removes_the_kernel_from_kernelbus(gateway: Gateway) -> None:
    async with gateway.client() as client:
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        assert kernel_id in await _kernelbus_ids(gateway)
        deleted = await client.delete(f"/api/kernels/{kernel_id}")
        assert deleted.status_code == 204, deleted.text
        assert (await client.get(f"/api/kernels/{kernel_id}")).status_code == 404
    assert kernel_id not in await _kernelbus_ids(gateway)


async def test_session_starts_and_stops_a_gateway_kernel(gateway: Gateway) -> None:
    body = {"path": "e2e.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}}
    async with gateway.client() as client:
        created = await client.post("/api/sessions", json=body)
        assert created.status_code == 201, created.text
        session = created.json()
        kernel_id = session["kernel"]["id"]
        assert kernel_id in await _kernelbus_ids(gateway)
        deleted = await client.delete(f"/api/sessions/{session['id']}")
        assert deleted.status_code == 204, deleted.text
    assert kernel_id not in await _kernelbus_ids(gateway)


async def test_jupyter_server_lists_the_gateway_model_and_connection_count(
    gateway: Gateway, kernel: str, channels: Channels
) -> None:
    """jupyter_server refreshes its models from Kernelbus's list (§3.2): the relay's websocket
    is counted by Kernelbus, since jupyter_server counts nothing itself (§3.5)."""
    await channels.run("pass")  # the relay is connected upstream
    # Kernelbus writes state and activity every few seconds, not per message: poll for them.
    model = await _poll_listed(
        gateway, kernel, lambda m: m["connections"] == 1 and m["execution_state"] == "idle"
    )
    datetime.strptime(model["last_activity"], "%Y-%m-%dT%H:%M:%S.%fZ")


async def _poll_listed(
    gateway: Gateway, kernel_id: str, done: Callable[[Message], bool]
) -> Message:
    """jupyter_server's listed model of `kernel_id` once `done(model)` holds (60 s at most)."""
    async with gateway.client() as client, asyncio.timeout(60):
        while True:
            response = await client.get("/api/kernels")
            assert response.status_code == 200, response.text
            model: Message = {k["id"]: k for k in response.json()}[kernel_id]
            if done(model):
                return model
            await asyncio.sleep(0.1)


async def test_gateway_errors_keep_their_status_through_jupyter_server(gateway: Gateway) -> None:
    """Kernelbus's status survives; its message only reaches jupyter_server's log (§3.4)."""
    async with gateway.client() as client:
        response = await client.post("/api/kernels", json={"name": "no-such-kernel"})
    assert response.status_code == 500
    assert response.json()["message"].startswith("Error from Gateway: [%s] %s.")
    log = gateway.server.log()
    assert "Error from Gateway: [No such kernel named no-such-kernel]" in log


# --- the relay's reconnect: an api replica goes away mid-execution (§3.3, §2.7) --------------


@pytest.fixture
def private_gateway(services: Services, tmp_path: Path) -> tuple[Gateway, Services]:
    """A stack of this test's own, whose api the test may stop and start again."""
    return _start_gateway(services, tmp_path), services


def _start_new_api(gateway: Gateway, services: Services) -> None:
    """A new api replica on the port of the one that went away (jupyter_server's URL is fixed)."""
    old = gateway.api
    port = old.url.rsplit(":", 1)[1]
    env = {"KERNELBUS_PORT": port, "KERNELBUS_IP": "127.0.0.1", "KERNELBUS_AUTH_TOKEN": old.token}
    new = services.spawn("kernelbus-api", env)
    wait_for(lambda: _health_ok(old.url), 60, "the new api", new)
    gateway.api = ApiProcess(new, old.url, old.token)


def _health_ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    "kill",
    [False, pytest.param(True, marks=[pytest.mark.slow])],
    ids=["api-stopped", "api-killed"],
)
async def test_output_produced_while_the_api_was_away_reaches_the_browser(
    private_gateway: tuple[Gateway, Services], tmp_path: Path, kill: bool
) -> None:
    gateway, services = private_gateway
    go, done = tmp_path / "go", tmp_path / "done"
    code = (
        "import os, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "print('while away', flush=True)\n"
        f"open({str(done)!r}, 'w').close()\n"
    )
    async with gateway.client() as client:
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
    ws = await _open_channels(gateway, kernel_id)
    try:
        channels = Channels(ws, gateway.logs)
        msg_id = await channels.execute(code)
        await channels.next_of(msg_id, "execute_input")
        await asyncio.to_thread(_replace_api_after_output, gateway, services, kill, go, done)
        seen = await channels.until_done(msg_id)
    finally:
        await ws.close()
    assert [m["content"]["text"] for m in _of_type(seen, "stream")] == ["while away\n"]
    assert _reply(seen)["content"]["status"] == "ok"


def _replace_api_after_output(
    gateway: Gateway, services: Services, kill: bool, go: Path, done: Path
) -> None:
    """Take the api away (SIGTERM, or SIGKILL: a crash), let the kernel print while no api is
    up, then start a new replica."""
    old = gateway.api.service
    old.kill() if kill else old.stop()
    go.touch()
    wait_for(done.exists, 60, "the kernel's output")
    _start_new_api(gateway, services)
