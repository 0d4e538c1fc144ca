"""The api's REST surface with no kernel worker: errors, auth, origin, settings.

Each test runs on a private nats-server, so no worker of another test is ever live here.
"""

from __future__ import annotations

import time
import uuid

import httpx
import nats
import pytest

from kernelbus import natsserver
from kernelbus.models import KernelRecord
from kernelbus.registry import Registry
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

KID = "4db5d35c-712c-4b42-a85b-0c07964f8e3f"


@pytest.fixture
def api(services: Services, fresh_nats: natsserver.NatsServer) -> ApiProcess:
    return services.api(nats_url=fresh_nats.url, token="s3cret")


def _client(api: ApiProcess) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers=api.headers, timeout=30)


def test_start_without_any_worker_is_503_at_once(api: ApiProcess) -> None:
    with _client(api) as client:
        response = client.post("/api/kernels", json={})
    assert response.status_code == 503
    assert response.json()["reason"] == "Service Unavailable"
    assert "worker" in response.json()["message"]


def test_health(api: ApiProcess) -> None:
    with httpx.Client(base_url=api.url) as client:
        assert client.get("/api/health/live").status_code == 200
        ready = client.get("/api/health/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "no live kernel worker"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong"}, {"Authorization": "token"}, {"Authorization": "x"}],
)
def test_missing_or_wrong_token_is_401(api: ApiProcess, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=api.url, headers=headers) as client:
        for method, path in [
            ("GET", "/api"),
            ("GET", "/api/kernels"),
            ("POST", "/api/kernels"),
            ("GET", "/api/kernelspecs"),
            ("GET", "/kernelspecs/python3/logo-64x64.png"),
            ("DELETE", f"/api/kernels/{KID}"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 401, (method, path)
            assert response.json() == {"reason": "Unauthorized", "message": ""}


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": "token s3cret"}, {}),
        ({"Authorization": "Bearer s3cret"}, {}),
        ({"Authorization": "TOKEN s3cret"}, {}),
        ({}, {"token": "s3cret"}),
    ],
)
def test_token_forms_are_accepted(
    api: ApiProcess, headers: dict[str, str], params: dict[str, str]
) -> None:
    with httpx.Client(base_url=api.url, headers=headers) as client:
        response = client.get("/api", params=params)
    assert response.status_code == 200
    assert response.json()["version"] == "2.21.1"
    assert response.headers["content-type"] == "application/json"


def test_unauthenticated_routes(api: ApiProcess) -> None:
    with httpx.Client(base_url=api.url) as client:
        options = client.options("/api/kernels")
        assert (options.status_code, options.content) == (200, b"")
        swagger = client.get("/api/swagger.json")
        assert swagger.status_code == 200
        assert "/api/kernels/{kernel_id}/restart" in swagger.json()["paths"]
        assert client.get("/openapi.json").json() == swagger.json()


def test_unknown_routes_and_methods(api: ApiProcess) -> None:
    with _client(api) as client:
        for path in ("/api/contents", "/api/status", "/lab", "/api/kernels/not-a-uuid"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"message": "", "reason": "Not Found"}
        put = client.put(f"/api/kernels/{KID}")
        assert put.status_code == 405
        assert put.json() == {"message": "", "reason": "Method Not Allowed"}


def test_unknown_kernel_is_404_on_every_kernel_route(api: ApiProcess) -> None:
    expected = {"message": f"Kernel does not exist: {KID}", "reason": "Not Found"}
    with _client(api) as client:
        for method, path in [
            ("GET", f"/api/kernels/{KID}"),
            ("DELETE", f"/api/kernels/{KID}"),
            ("POST", f"/api/kernels/{KID}/interrupt"),
            ("POST", f"/api/kernels/{KID}/restart"),
        ]:
            response = client.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json() == expected


def test_kernelspecs_without_workers(api: ApiProcess) -> None:
    with _client(api) as client:
        assert client.get("/api/kernelspecs").json() == {"default": "python3", "kernelspecs": {}}
        missing = client.get("/api/kernelspecs/python3")
        assert missing.status_code == 404
        assert missing.json()["message"] == "Kernel spec python3 not found"
        assert client.get("/kernelspecs/python3/logo-64x64.png").status_code == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{nope", "Invalid JSON in body of request"),
        (b'{"env": ["KERNEL_A"]}', "env"),
        (b'{"env": {"KERNEL_A": 5}}', "Environment variable 'KERNEL_A' value must be a string"),
        (b'{"env": {"KERNEL_A": "a$b"}}', "'KERNEL_A' value contains prohibited characters"),
        (b'{"env": {"KERNEL_A": "a\\nb"}}', "'KERNEL_A' value contains prohibited characters"),
        (b'{"kernel_id": "123"}', "kernel_id"),
        (b'{"name": "no/slash"}', "name"),
        (b"[]", "body"),
    ],
)
def test_bad_start_bodies_are_400(api: ApiProcess, body: bytes, words: str) -> None:
    headers = {**api.headers, "Content-Type": "application/json"}
    with httpx.Client(base_url=api.url, headers=headers) as client:
        response = client.post("/api/kernels", content=body)
    assert response.status_code == 400
    assert response.json()["reason"] == "Bad Request"
    assert words in response.json()["message"]
    assert "a$b" not in response.text


def test_long_env_value_is_400_without_echo(api: ApiProcess) -> None:
    with _client(api) as client:
        response = client.post("/api/kernels", json={"env": {"KERNEL_A": "v" * 4097}})
    assert response.status_code == 400
    assert (
        response.json()["message"] == "Environment variable 'KERNEL_A' value exceeds maximum length"
    )


def test_cross_origin_requests(api: ApiProcess) -> None:
    host = api.url.removeprefix("http://")
    with _client(api) as client:
        assert client.get("/api", headers={"Origin": api.url}).status_code == 200
        blocked = client.get("/api", headers={"Origin": "http://evil.example"})
        assert blocked.status_code == 403
        assert "cross origin" in blocked.json()["message"].lower()
        assert client.get("/api", headers={"Origin": f"https://{host}"}).status_code == 200


async def test_orphaned_kernel_is_reported_and_deleted(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    api = services.api(nats_url=fresh_nats.url, token="")
    kid = str(uuid.uuid4())
    nc = await nats.connect(fresh_nats.url)
    try:
        registry = await Registry.open(nc.jetstream())
        await registry.put_kernel(KernelRecord(id=kid, name="python3", worker_id="gone"))
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            assert (await client.get(f"/api/kernels/{kid}")).json()["id"] == kid
            interrupt = await client.post(f"/api/kernels/{kid}/interrupt", json={})
            assert interrupt.status_code == 503
            assert kid in interrupt.json()["message"]
            assert (await client.delete(f"/api/kernels/{kid}")).status_code == 204
            assert (await client.get(f"/api/kernels/{kid}")).status_code == 404
            assert (await client.delete(f"/api/kernels/{kid}")).status_code == 404
        assert await registry.get_kernel(kid) is None
    finally:
        await nc.close()


def test_auth_off_ignores_authorization(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    api = services.api(nats_url=fresh_nats.url, token="")
    with httpx.Client(base_url=api.url) as client:
        for headers in ({}, {"Authorization": "token"}, {"Authorization": "token whatever"}):
            assert client.get("/api", headers=headers).status_code == 200


def test_base_url_list_kernels_and_cors_settings(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    env = {
        "KERNELBUS_BASE_URL": "/gw",
        "KERNELBUS_LIST_KERNELS": "false",
        "KERNELBUS_ALLOW_ORIGIN": "http://lab.example",
        "KERNELBUS_ALLOW_CREDENTIALS": "true",
        "KERNELBUS_ALLOW_HEADERS": "Content-Type,Authorization",
        "KERNELBUS_ALLOW_METHODS": "GET,POST,DELETE",
        "KERNELBUS_EXPOSE_HEADERS": "Location",
        "KERNELBUS_MAX_AGE": "600",
        "KERNELBUS_DEFAULT_KERNEL_NAME": "pyx",
    }
    port = natsserver.free_port()
    process = services.spawn(
        "kernelbus-api",
        {**env, "KERNELBUS_PORT": str(port), "KERNELBUS_AUTH_TOKEN": ""},
        nats_url=fresh_nats.url,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/gw/api/health/live", process.alive)
    with httpx.Client(base_url=url) as client:
        assert client.get("/api").status_code == 404
        assert client.get("/gw/api").status_code == 200
        assert client.get("/gw/api/swagger.json").status_code == 200
        listing = client.get("/gw/api/kernels")
        assert listing.status_code == 403
        assert listing.json() == {"reason": "Forbidden", "message": "Forbidden"}
        assert client.get("/gw/api/sessions").json() == listing.json()
        assert client.get("/gw/api/kernelspecs").json()["default"] == "pyx"
        cors = client.get("/gw/api", headers={"Origin": "http://lab.example"})
        assert cors.status_code == 200
        assert cors.headers["access-control-allow-origin"] == "http://lab.example"
        assert cors.headers["access-control-allow-credentials"] == "true"
        assert cors.headers["access-control-allow-headers"] == "Content-Type,Authorization"
        assert cors.headers["access-control-allow-methods"] == "GET,POST,DELETE"
        assert cors.headers["access-control-expose-headers"] == "Location"
        assert cors.headers["access-control-max-age"] == "600"
        assert client.get("/gw/api", headers={"Origin": "http://other"}).status_code == 403


def _wait_http(url: str, alive: object) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert callable(alive) and alive(), "the api exited"
        time.sleep(0.05)
    raise TimeoutError(url)
