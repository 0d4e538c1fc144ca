"""A stock `jupyter server --gateway-url` pointed at Kernelbus, configured with
`KernelbusEventHandler`: its `gateway_client` and `kernel_actions` events end up stored by the
events service and queryable over HTTP."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernelbus import events, natsserver
from kernelbus.processes import ServiceProcess, spawn, wait_for
from kernelbus.testing.events import EventsProcess, start_events_service
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.e2e

JS_TOKEN = "js-token"


def _config(path: Path, sink: EventsProcess) -> Path:
    handler = f"KernelbusEventHandler(url={sink.url!r}, token={sink.token!r})"
    path.write_text(
        "from kernelbus_jupyter.events import KernelbusEventHandler\n"
        f"c.EventLogger.handlers = [{handler}]\n"
    )
    return path


@pytest.fixture
def jupyter_server(
    services: Services, tmp_path: Path
) -> Iterator[tuple[str, EventsProcess, ServiceProcess]]:
    services.worker()
    api = services.api()
    sink = start_events_service(services, tmp_path / "events.sqlite", token="events-token")
    port = natsserver.free_port()
    root = tmp_path / "root"
    root.mkdir()
    command = [
        str(Path(sys.executable).parent / "jupyter-server"),
        f"--config={_config(tmp_path / 'jupyter_server_config.py', sink)}",
        f"--gateway-url={api.url}",
        f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={JS_TOKEN}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # CI containers often run as root
    ]
    env = {"JUPYTER_GATEWAY_AUTH_TOKEN": api.token}
    server: ServiceProcess = spawn("jupyter-server", command, env, tmp_path / "logs")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status_ok(url), 60, "jupyter server", server)
        yield url, sink, server
    finally:
        server.stop()


def _status_ok(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/status", params={"token": JS_TOKEN}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def test_jupyter_server_gateway_events_are_stored(
    jupyter_server: tuple[str, EventsProcess, ServiceProcess],
) -> None:
    url, sink, server = jupyter_server
    headers = {"Authorization": f"token {JS_TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        specs = await client.get("/api/kernelspecs")
        assert specs.status_code == 200, specs.text
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        assert (await client.delete(f"/api/kernels/{kernel_id}")).status_code == 204
    gateway = await asyncio.to_thread(sink.wait_for_events, 3, 60, schema=events.GATEWAY_CLIENT)
    assert all(e["source"] == "http" for e in gateway)
    assert {e["event"]["status"] for e in gateway} == {"success"}
    forwarded = await asyncio.to_thread(
        sink.wait_for_events, 1, 60, schema=events.KERNEL_ACTIONS, kernel_id=kernel_id
    )
    from_server = [e["event"]["action"] for e in forwarded if e["source"] == "http"]
    assert "start" in from_server
    assert "Kernelbus refused" not in server.log()
    assert "not delivered" not in server.log()
