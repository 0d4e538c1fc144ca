"""One trace from an HTTP request through NATS to the worker, and JSON logs with ids, checked
on real api and worker processes.

Why real processes and the console exporter rather than an in-memory exporter in one process:
OpenTelemetry allows one global tracer provider per process, so api and worker in one process
would share it and the test could not tell that the context really crossed NATS in the
`traceparent` header. Here each process exports its own spans, one JSON object per line on
stdout (`OTEL_TRACES_EXPORTER=console`), and the test links them by trace and span ids.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, wait_for
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

OBSERVED = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "KERNELBUS_LOG_FORMAT": "json",
}
Span = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, ApiProcess]]:
    """On a nats-server of their own, so the kernels this api starts land on this worker
    whatever other tests' workers hold."""
    root = tmp_path_factory.mktemp("telemetry")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    started = Services(root, server.url)
    try:
        worker = started.worker(OBSERVED)
        api = started.api(OBSERVED)
        yield worker, api
    finally:
        started.stop_all()
        server.stop()


def json_lines(process: ServiceProcess) -> list[dict[str, Any]]:
    found = []
    for line in process.log().splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line still being written
    return found


def spans(process: ServiceProcess, trace_id: str) -> list[Span]:
    return [
        s for s in json_lines(process) if s.get("context", {}).get("trace_id") == f"0x{trace_id}"
    ]


def named(found: list[Span], name: str) -> Span:
    matching = [s for s in found if s["name"] == name]
    assert len(matching) == 1, [s["name"] for s in found]
    return matching[0]


def ancestors(span: Span, found: list[Span]) -> list[str]:
    """Span ids from `span`'s parent up to the first parent not among `found`."""
    by_id = {s["context"]["span_id"]: s for s in found}
    chain, parent = [], span["parent_id"]
    while parent is not None and parent not in chain:
        chain.append(parent)
        parent = by_id[parent]["parent_id"] if parent in by_id else None
    return chain


async def start_kernel(api: ApiProcess, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        response = await http.post("/api/kernels", json={"name": "python3"}, headers=headers)
        assert response.status_code == 201, response.text
        kid = str(response.json()["id"])
        assert (await http.delete(f"/api/kernels/{kid}")).status_code == 204
        return kid


async def test_one_trace_from_http_through_nats_to_the_worker(
    cluster: tuple[ServiceProcess, ApiProcess],
) -> None:
    worker, api = cluster
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    await start_kernel(api, {"traceparent": f"00-{trace_id}-{parent_id}-01"})

    def exported() -> bool:
        names = {s["name"] for s in spans(api.service, trace_id) + spans(worker, trace_id)}
        return {"POST /api/kernels", "send kb.worker.*.start", "handle StartKernel"} <= names

    wait_for(exported, 30, "spans of the start exported by api and worker", worker)
    http_span = named(spans(api.service, trace_id), "POST /api/kernels")
    send = named(spans(api.service, trace_id), "send kb.worker.*.start")
    handle = named(spans(worker, trace_id), "handle StartKernel")
    assert http_span["parent_id"] == f"0x{parent_id}"
    assert http_span["context"]["span_id"] in ancestors(send, spans(api.service, trace_id))
    assert handle["parent_id"] == send["context"]["span_id"]
    assert http_span["kind"] == handle["kind"] == "SpanKind.SERVER"
    assert http_span["resource"]["attributes"]["service.name"] == "kernelbus-api"
    assert handle["resource"]["attributes"]["service.name"] == "kernelbus-worker"
    assert http_span["attributes"]["http.response.status_code"] == 201


async def test_worker_json_logs_name_kernel_and_worker(
    cluster: tuple[ServiceProcess, ApiProcess],
) -> None:
    worker, api = cluster
    kid = await start_kernel(api, {})
    worker_id = worker.env["KERNELBUS_WORKER_ID"]

    def about_kernel() -> list[dict[str, Any]]:
        logs = [line for line in json_lines(worker) if "ts" in line]
        return [line for line in logs if kid in line["msg"] or line.get("kernel_id") == kid]

    def shut_down() -> bool:
        return any("shut down" in line["msg"] for line in about_kernel())

    wait_for(shut_down, 30, "the log line of the kernel's shutdown", worker)
    lines = about_kernel()
    assert any("kernel started" in line["msg"] for line in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    for line in lines:
        assert line.get("kernel_id") == kid, line
        assert line.get("worker_id") == worker_id, line
