"""Property-based fuzzing (hypothesis, seeded) of every REST route of `/api/swagger.json`
against a real api and worker: random path parameters, query strings, JSON and non-JSON bodies,
missing tokens. No 5xx but the ones a route documents; afterwards the api is healthy, no kernel
or session is left over, and the kernel that existed all along still runs code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from channels_support import open_socket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelbus import natsserver
from kernelbus.testing.plugin import ApiProcess, Services
from kernelbus_api.app import create_app
from kernelbus_api.settings import ApiSettings

# The fuzzers, then `test_nothing_changed`: steps of one scenario, kept in file order when shuffled.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]

SPEC: dict[str, Any] = create_app(ApiSettings()).openapi()
OPERATIONS = [
    (method.upper(), path)
    for path, ops in SPEC["paths"].items()
    for method in ops
    if method in ("get", "post", "put", "patch", "delete", "head")
]
NO_SUCH = "00000000-0000-4000-8000-000000000000"
EXAMPLES = 25
DESTRUCTIVE = {("DELETE", "/api/kernels/{kernel_id}"), ("POST", "/api/kernels/{kernel_id}/restart")}


@dataclass
class Target:
    api: ApiProcess
    services: Services
    kernel_id: str
    http: httpx.Client


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz-rest")
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, server.url)
    try:
        services.worker({"KERNELBUS_WORKER_POOL": "python3=1"})
        api = services.api({"KERNELBUS_REQUEST_TIMEOUT": "20"})
        with httpx.Client(base_url=api.url, headers=api.headers, timeout=90) as http:
            created = http.post("/api/kernels", json={"name": "python3"})
            assert created.status_code == 201, created.text
            yield Target(api, services, created.json()["id"], http)
    finally:
        services.stop_all()
        server.stop()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=15,
)
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/api/kernels": {"name": "python3", "env": {"KERNEL_USERNAME": "fuzz"}},
    "/api/sessions": {"path": "f.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
    "/api/sessions/{session_id}": {"name": "renamed"},
}


def _mutated(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    def mutate(key: str, value: Any) -> dict[str, Any]:
        return {**base, key: value}

    return st.builds(mutate, st.sampled_from([*base, "kernel_id", "extra"]), json_values)


def _segment(kernel_id: str, destructive: bool) -> st.SearchStrategy[str]:
    known = [NO_SUCH, "python3", "logo-64x64.png", "kernel.js", "%00", "a" * 300]
    if not destructive:
        known.append(kernel_id)
    text = st.text(min_size=1, max_size=40).filter(lambda t: t.strip(".") != "")
    return st.sampled_from(known) | text.map(lambda t: quote(t, safe=""))


def _body(path: str) -> st.SearchStrategy[bytes]:
    base = VALID_BODIES.get(path, {})
    return st.one_of(
        st.just(json.dumps(base).encode()),
        _mutated(base).map(lambda b: json.dumps(b).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=512),
    )


def _cleanup(http: httpx.Client, method: str, path: str, response: httpx.Response) -> None:
    """Whatever a valid fuzzed request created goes again (nothing is left over)."""
    if response.status_code not in (200, 201) or method not in ("POST", "PATCH"):
        return
    body = response.json()
    if path == "/api/kernels":
        http.delete(f"/api/kernels/{body['id']}")
    elif path.startswith("/api/sessions"):
        http.delete(f"/api/sessions/{body['id']}")


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_route(target: Target, method: str, path: str) -> None:
    operation = SPEC["paths"][path][method.lower()]
    documented = {int(code) for code in operation["responses"]}
    destructive = (method, path) in DESTRUCTIVE
    seen: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        url = path
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                value = data.draw(_segment(target.kernel_id, destructive), label=param["name"])
                url = url.replace("{" + param["name"] + "}", value)
        query = {}
        for param in operation.get("parameters", []):
            if param["in"] == "query" and data.draw(st.booleans()):
                query[param["name"]] = data.draw(st.text(max_size=30), label=param["name"])
        content = data.draw(_body(path)) if "requestBody" in operation else None
        authorized = data.draw(st.integers(0, 9), label="authorized") > 0
        headers = {**target.api.headers, "Content-Type": "application/json"}
        if not authorized:
            headers.pop("Authorization", None)
        response = target.http.request(method, url, params=query, content=content, headers=headers)
        status = response.status_code
        seen.add(status)
        assert status < 500 or status in documented, (method, url, content, status, response.text)
        if status >= 400 and method != "HEAD":
            assert {"message", "reason"} <= set(response.json()), response.text
        _cleanup(target.http, method, path, response)

    fuzz()
    assert seen - {401}, f"only unauthenticated answers: {seen}"  # the fuzzer got through


def test_the_api_is_unaffected(target: Target) -> None:
    """Runs after the fuzzers (file order)."""
    http = target.http
    assert http.get("/api/health/ready").status_code == 200
    assert [k["id"] for k in http.get("/api/kernels").json()] == [target.kernel_id]
    assert http.get("/api/sessions").json() == []
    outputs = asyncio.run(_run(target.api, target.kernel_id, "print(6 * 7)"))
    assert any(m["content"].get("text") == "42\n" for m in outputs), outputs
    for process in target.services.started:
        assert process.alive(), process.log()[-3000:]
        assert "Traceback" not in process.log(), process.log()[-5000:]


def test_the_fuzzed_spec_is_the_served_one(target: Target) -> None:
    served = target.http.get("/api/swagger.json").json()
    assert set(served["paths"]) == set(SPEC["paths"])


async def _run(api: ApiProcess, kernel_id: str, code: str) -> list[dict[str, Any]]:
    socket = await open_socket(api, kernel_id)
    try:
        return await socket.run(code)
    finally:
        await socket.close()
