"""Kernel start, interrupt, restart and shutdown through the api produce `kernel_actions`
events in the events sink that validate against jupyter_server's own schema files."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import jupyter_server
import pytest
from jupyter_events import yaml as jyaml
from jupyter_events.schema_registry import SchemaRegistry

from kernelbus import events
from kernelbus.testing.events import start_events_service
from kernelbus.testing.plugin import Services, Stack

pytestmark = pytest.mark.integration

JS_SCHEMAS = Path(jupyter_server.__file__).parent / "event_schemas"


def jupyter_server_registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    for name in ("kernel_actions", "gateway_client"):
        registry.register(jyaml.load(JS_SCHEMAS / name / "v1.yaml"))
    return registry


async def _drive_kernel(stack: Stack) -> str:
    async with httpx.AsyncClient(
        base_url=stack.api.url, headers=stack.api.headers, timeout=60
    ) as client:
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = str(started.json()["id"])
        for action in ("interrupt", "restart"):
            done = await client.post(f"/api/kernels/{kernel_id}/{action}")
            assert done.status_code in (200, 204), done.text
        deleted = await client.delete(f"/api/kernels/{kernel_id}")
        assert deleted.status_code == 204, deleted.text
    return kernel_id


async def test_kernel_lifecycle_emits_jupyter_server_kernel_actions(
    stack: Stack, stack_services: Services, tmp_path: Path
) -> None:
    sink = start_events_service(
        stack_services, tmp_path / "events.sqlite", consumer=f"actions-{uuid.uuid4().hex[:8]}"
    )
    kernel_id = await _drive_kernel(stack)
    stored = await asyncio.to_thread(
        sink.wait_for_events, 4, 60, kernel_id=kernel_id, schema=events.KERNEL_ACTIONS
    )
    registry = jupyter_server_registry()
    for record in stored:
        capsule = record["event"]
        assert capsule["__schema_version__"] == "1"
        data = {k: v for k, v in capsule.items() if not k.startswith("__")}
        registry.validate_event(capsule["__schema__"], data)
        assert data["status"] == "success" and data["kernel_id"] == kernel_id
    actions = [r["event"]["action"] for r in stored]
    assert actions == ["start", "interrupt", "restart", "shutdown"]
