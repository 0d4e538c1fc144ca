"""Every failed lifecycle action is a `kernel_actions` error event (status "error", the HTTP
status_code the client got, msg) that validates against jupyter_server's own schema: no
worker, unknown kernelspec, launch timeout, full worker, a shutdown the worker never answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_events_kernel_actions import jupyter_server_registry

from kernelbus import events, natsserver
from kernelbus.processes import wait_for
from kernelbus.testing.events import EventsProcess, start_events_service
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sleeper_spec(root: Path) -> Path:
    """A kernelspec whose process never answers kernel_info: every launch times out."""
    spec = root / "share" / "jupyter" / "kernels" / "sleeper"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", "import time; time.sleep(600)", "{connection_file}"]
    body = {"argv": argv, "display_name": "Sleeper", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(body))
    return root / "share" / "jupyter"


async def _post(api: ApiProcess, body: dict[str, Any]) -> tuple[str, httpx.Response]:
    kernel_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=90) as client:
        response = await client.post("/api/kernels", json={**body, "kernel_id": kernel_id})
    return kernel_id, response


async def _delete(api: ApiProcess, kernel_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=90) as client:
        return await client.delete(f"/api/kernels/{kernel_id}")


def _error_event(sink: EventsProcess, kernel_id: str) -> dict[str, Any]:
    """The kernel's one `kernel_actions` error event (a started kernel also has successes)."""
    errors: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal errors
        found = sink.all_events(kernel_id=kernel_id, schema=events.KERNEL_ACTIONS)
        errors = [e for e in found if e["event"].get("status") == "error"]
        return bool(errors)

    wait_for(arrived, 60, f"an error event of {kernel_id}", sink.service, 0.1)
    (stored,) = errors
    capsule: dict[str, Any] = stored["event"]
    data = {k: v for k, v in capsule.items() if not k.startswith("__")}
    jupyter_server_registry().validate_event(capsule["__schema__"], data)
    return data


async def test_failed_lifecycle_actions_emit_kernel_actions_errors(
    fresh_nats: natsserver.NatsServer, tmp_path: Path
) -> None:
    services = Services(tmp_path, fresh_nats.url)
    try:
        await _scenario(services, tmp_path)
    finally:
        services.stop_all()


async def _scenario(services: Services, tmp_path: Path) -> None:
    sink = start_events_service(services, tmp_path / "events.sqlite")
    api = services.api({"KERNELBUS_REQUEST_TIMEOUT": "3"})
    seen: dict[str, tuple[int, dict[str, Any]]] = {}

    async def expect(case: str, kernel_id: str, response: httpx.Response, action: str) -> None:
        assert response.status_code >= 400, f"{case}: {response.text}"
        event = await asyncio.to_thread(_error_event, sink, kernel_id)
        assert event["action"] == action and event["status"] == "error", (case, event)
        assert event["status_code"] == response.status_code, (case, event)
        assert event["msg"] == response.json()["message"], (case, event)
        seen[case] = (response.status_code, event)

    # No worker at all.
    kernel_id, response = await _post(api, {"name": "python3"})
    await expect("no worker", kernel_id, response, "start")

    worker = services.worker(
        {"KERNELBUS_WORKER_MAX_KERNELS": "1", "JUPYTER_PATH": str(_sleeper_spec(tmp_path))}
    )
    kernel_id, response = await _post(api, {"name": "no-such-spec"})
    await expect("unknown spec", kernel_id, response, "start")

    body = {"name": "sleeper", "env": {"KERNEL_LAUNCH_TIMEOUT": "1"}}
    kernel_id, response = await _post(api, body)
    await expect("launch timeout", kernel_id, response, "start")

    running, started = await _post(api, {"name": "python3"})
    assert started.status_code == 201, started.text
    kernel_id, response = await _post(api, {"name": "python3"})
    await expect("full worker", kernel_id, response, "start")

    # The worker stops answering (SIGSTOP): the shutdown fails with a bus timeout.
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        response = await _delete(api, running)
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    await expect("failed shutdown", running, response, "shutdown")
    assert (await _delete(api, running)).status_code == 204

    codes = {case: code for case, (code, _) in seen.items()}
    assert codes["no worker"] == 503
    assert codes["unknown spec"] == 500
    assert codes["launch timeout"] == 500
    assert codes["full worker"] in (403, 503)  # the worker's own limit, or placement's
    assert codes["failed shutdown"] == 504
