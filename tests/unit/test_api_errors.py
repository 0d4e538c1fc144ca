"""Error mapping and error bodies, through a bare app with the api's handlers (no sockets)."""

from __future__ import annotations

from typing import get_args

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from kernelbus.errors import ErrorCode, error_for
from kernelbus_api import errors
from kernelbus_api.deps import KernelIdParam
from kernelbus_api.models import StartKernelBody


def test_every_error_code_has_a_status() -> None:
    assert set(errors.STATUS_BY_CODE) == set(get_args(ErrorCode))


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("no_such_kernel", 404),
        ("no_such_kernelspec", 500),
        ("no_worker", 503),
        ("capacity", 403),
        ("bad_request", 400),
        ("launch_failed", 500),
        ("launch_timeout", 500),
        ("restart_failed", 500),
        ("bus_timeout", 504),
        ("bus_unavailable", 503),
        ("payload_too_large", 413),
        ("internal", 500),
    ],
)
def test_codes_map_to_statuses(code: str, status: int) -> None:
    assert errors.status_for(error_for(code, "x")) == status


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/domain/{code}")
    async def domain(code: str) -> None:
        raise error_for(code, f"message for {code}")

    @app.get("/k/{kernel_id}")
    async def kernel(kernel_id: KernelIdParam) -> dict[str, str]:
        return {"id": kernel_id}

    @app.post("/body")
    async def body(payload: StartKernelBody | None = None) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/http")
    async def http() -> None:
        raise HTTPException(404, "Kernel spec x not found")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_domain_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/domain/capacity")
    assert response.status_code == 403
    assert response.json() == {"message": "message for capacity", "reason": "Forbidden"}
    assert response.headers["content-type"] == "application/json"


async def test_catch_all_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"message": "", "reason": "Not Found"}


async def test_405(client: httpx.AsyncClient) -> None:
    response = await client.put("/http")
    assert response.status_code == 405
    assert response.json() == {"message": "", "reason": "Method Not Allowed"}


async def test_malformed_kernel_id_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/k/not-a-uuid")).status_code == 404
    ok = await client.get("/k/4db5d35c-712c-4b42-a85b-0c07964f8e3f")
    assert ok.json() == {"id": "4db5d35c-712c-4b42-a85b-0c07964f8e3f"}


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/body", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": "Invalid JSON in body of request",
        "reason": "Bad Request",
    }


async def test_invalid_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/body", json={"env": ["a"]})
    assert response.status_code == 400
    assert "env" in response.json()["message"]


async def test_http_exception_message(client: httpx.AsyncClient) -> None:
    assert (await client.get("/http")).json() == {
        "message": "Kernel spec x not found",
        "reason": "Not Found",
    }


async def test_unexpected_error_has_no_traceback(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert set(response.json()) == {"message", "reason"}


async def test_every_503_says_when_to_retry() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        unavailable = await client.get("/domain/bus_unavailable")
        not_found = await client.get("/domain/no_such_kernel")
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == errors.RETRY_AFTER
    assert unavailable.json()["message"] == "message for bus_unavailable"
    assert "Retry-After" not in not_found.headers


def test_a_jetstream_timeout_on_a_connected_bus_is_unavailability_not_a_timeout() -> None:
    import nats.errors

    from kernelbus import bus

    assert bus.translate(nats.errors.TimeoutError(), connected=True).code == "bus_unavailable"
    assert bus.translate(nats.errors.TimeoutError(), connected=False).code == "bus_unavailable"
