"""The NATS users and permissions compose deploys, on a real nats-server: every service runs
as its own user (rendered from the same deploy/nats/permissions.json as compose's nats.conf),
a full kernel lifecycle works, a subject outside a user's permissions is refused, and each
user reads only its own request replies (`_INBOX_<user>.>`), never another service's."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from channels_support import open_socket, types
from nats.aio.client import Client
from nats_deploy_support import render_module
from websockets.exceptions import ConnectionClosed

from kernelbus import bus, natsserver
from kernelbus.processes import ServiceProcess, kill_orphaned_kernels, wait_for
from kernelbus.settings import BusSettings
from kernelbus.testing.plugin import ApiProcess, Services, _http_ok

pytestmark = pytest.mark.integration

USERS = ("api", "worker", "culler", "events")


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(16) for user in USERS}


@pytest.fixture(scope="module")
def secured_nats(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[natsserver.NatsServer]:
    """A nats-server with exactly compose's users and permissions, on a loopback port."""
    render = render_module()
    block = render.authorization_block(render.load(), lambda user, _: json.dumps(passwords[user]))
    root = tmp_path_factory.mktemp("secured-nats")
    server = natsserver.start(root, extra_config=block, log_file=root / "nats.log")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ErrorLog:
    seen: list[Exception] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def first(self) -> str:
        """The text of the errors received, once at least one arrived (permission errors are
        asynchronous: `publish()` itself never raises them)."""
        await asyncio.wait_for(self.arrived.wait(), 10)
        return " | ".join(str(e) for e in self.seen).lower()


def creds(user: str, passwords: dict[str, str]) -> dict[str, str]:
    return {"NATS_USER": user, "NATS_PASSWORD": passwords[user]}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    secured_nats: natsserver.NatsServer,
    passwords: dict[str, str],
) -> Iterator[tuple[Services, ApiProcess]]:
    started = Services(tmp_path_factory.mktemp("deploy-services"), secured_nats.url)
    try:
        started.worker(creds("worker", passwords))
        api = started.api(creds("api", passwords))
        yield started, api
    finally:
        started.stop_all()


@pytest.fixture
async def as_user(
    secured_nats: natsserver.NatsServer, passwords: dict[str, str]
) -> AsyncIterator[tuple[Client, ErrorLog]]:
    """A raw client logged in as `api` (with the api's inbox prefix), collecting the
    asynchronous errors the server sends."""
    errors = ErrorLog()

    async def on_error(exc: Exception) -> None:
        errors.seen.append(exc)
        errors.arrived.set()

    nc = await nats.connect(
        secured_nats.url,
        user="api",
        password=passwords["api"],
        inbox_prefix=bus.inbox_prefix("api"),
        error_cb=on_error,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


def no_violations(*processes: ServiceProcess) -> None:
    for process in processes:
        assert "permissions violation" not in process.log().lower(), process.log()[-3000:]


async def test_kernel_lifecycle_under_compose_permissions(
    cluster: tuple[Services, ApiProcess],
) -> None:
    services, api = cluster
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        started = await http.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kid = started.json()["id"]
        assert (await http.get(f"/api/kernels/{kid}")).status_code == 200
        assert (await http.post(f"/api/kernels/{kid}/interrupt")).status_code == 204
        assert (await http.post(f"/api/kernels/{kid}/restart")).status_code == 200
        socket = await open_socket(api, kid)
        try:
            outputs = await socket.run("print(6 * 7)")
        finally:
            await socket.close()
        assert "execute_reply" in types(outputs)
        assert any(m["content"].get("text") == "42\n" for m in outputs)
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        assert (await http.get(f"/api/kernels/{kid}")).status_code == 404
    no_violations(*services.started)


def test_culler_and_events_run_as_their_users(
    cluster: tuple[Services, ApiProcess],
    secured_nats: natsserver.NatsServer,
    passwords: dict[str, str],
    tmp_path: Path,
) -> None:
    services, _ = cluster
    health = natsserver.free_port()
    culler_env = {
        "KERNELBUS_CULLER_HEALTH_PORT": str(health),
        "KERNELBUS_CULLER_CULL_INTERVAL": "1",
    }
    culler = services.spawn(
        "kernelbus-culler", {**creds("culler", passwords), **culler_env}, secured_nats.url
    )
    port = natsserver.free_port()
    events_env = {
        "KERNELBUS_EVENTS_PORT": str(port),
        "KERNELBUS_EVENTS_DB_PATH": str(tmp_path / "events.sqlite"),
    }
    events = services.spawn(
        "kernelbus-events", {**creds("events", passwords), **events_env}, secured_nats.url
    )
    live = f"http://127.0.0.1:{health}/health/live"
    wait_for(lambda: _http_ok(live), 60, "the culler", culler)
    ready = f"http://127.0.0.1:{port}/api/health/ready"
    wait_for(lambda: _http_ok(ready), 60, "the events consumer", events)
    no_violations(culler, events)


async def test_a_subject_outside_the_permissions_is_refused(
    as_user: tuple[Client, ErrorLog],
) -> None:
    nc, errors = as_user
    await nc.publish("kb.conn.someone-else", b"forged reply")  # only workers may
    await nc.flush()
    seen = await errors.first()
    assert "permissions violation for publish" in seen
    assert "kb.conn.someone-else" in seen


async def test_a_subscription_outside_the_permissions_is_refused(
    as_user: tuple[Client, ErrorLog],
) -> None:
    nc, errors = as_user
    await nc.subscribe("kb.kernel.k1.in")  # client input is for the owning worker only
    await nc.flush()
    assert "permissions violation for subscription" in await errors.first()


@pytest.mark.parametrize("inbox", ["_INBOX_worker.>", "_INBOX_worker.abc.*", "_INBOX.>"])
async def test_the_api_cannot_read_other_services_replies(
    as_user: tuple[Client, ErrorLog], inbox: str
) -> None:
    nc, errors = as_user
    await nc.subscribe(inbox)
    await nc.flush()
    seen = await errors.first()
    assert "permissions violation for subscription" in seen
    assert inbox.lower() in seen


def _settings_as(user: str, url: str, passwords: dict[str, str]) -> BusSettings:
    return BusSettings(nats_url=url, nats_user=user, nats_password=passwords[user])


@pytest.mark.parametrize("user", USERS)
async def test_each_user_gets_replies_on_its_own_inbox_prefix(
    secured_nats: natsserver.NatsServer, passwords: dict[str, str], user: str
) -> None:
    settings = _settings_as(user, secured_nats.url, passwords)
    nc = await bus.connect(settings, name=f"inbox-{user}", role=user)
    try:
        info = await nc.jetstream(timeout=5).account_info()
    finally:
        await bus.close(nc)
    assert info.limits is not None


async def test_the_shared_inbox_prefix_is_no_longer_granted(
    secured_nats: natsserver.NatsServer, passwords: dict[str, str]
) -> None:
    """A client left on nats-py's default `_INBOX` cannot receive its replies."""
    nc = await bus.connect(_settings_as("api", secured_nats.url, passwords), name="old-inbox")
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=2).account_info()
    finally:
        await bus.close(nc)


async def test_a_wrong_password_is_refused(secured_nats: natsserver.NatsServer) -> None:
    with pytest.raises((nats.errors.Error, OSError)) as refused:
        await nats.connect(
            secured_nats.url,
            user="worker",
            password="wrong",
            max_reconnect_attempts=1,
            allow_reconnect=False,
        )
    assert "authorization" in str(refused.value).lower()


async def test_a_lost_workers_clients_hear_dead_and_are_closed_under_compose_permissions(
    cluster: tuple[Services, ApiProcess],
    secured_nats: natsserver.NatsServer,
    passwords: dict[str, str],
) -> None:
    """A worker that never comes back: the culler (as its own NATS user) marks its kernels
    dead and publishes their `status: dead` on iopub, which compose's permissions must allow;
    the connected client gets it and the websocket is closed."""
    services, api = cluster
    doomed = services.worker({**creds("worker", passwords), "KERNELBUS_WORKER_MAX_KERNELS": "500"})
    culler = services.spawn(
        "kernelbus-culler",
        {**creds("culler", passwords), "KERNELBUS_CULLER_WORKER_CHECK_INTERVAL": "1"},
        secured_nats.url,
    )
    wait_for(lambda: "ready" in culler.log(), 60, "the culler", culler)
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        started = await http.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kid = started.json()["id"]
        socket = await open_socket(api, kid)
        try:
            await socket.run("1")
            doomed.kill()
            last = await socket.until(
                lambda m: (
                    m["header"]["msg_type"] == "status"
                    and m["content"]["execution_state"] == "dead"
                ),
                timeout=90,
            )
            assert last[-1]["parent_header"] == {}
            with pytest.raises(ConnectionClosed) as closed:
                await socket.recv(timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        finally:
            await socket.close()
        model = (await http.get(f"/api/kernels/{kid}")).json()
        assert model["execution_state"] == "dead" and "lost" in model["reason"]
        kill_orphaned_kernels(services.runtime_dir)  # the dead worker's kernel lives on
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
    no_violations(culler)
