"""The OpenAPI document describes the routes as they answer (built without any socket)."""

from __future__ import annotations

from typing import Any

import pytest

from kernelbus_api.app import create_app
from kernelbus_api.settings import ApiSettings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(ApiSettings(base_url="/gw/")).openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in document["paths"].items() for m, op in ops.items()]


def test_every_route_of_the_table_is_documented_under_base_url(document: dict[str, Any]) -> None:
    found = {(m.upper(), p) for m, p, _ in _operations(document)}
    assert {
        ("GET", "/gw/api"),
        ("GET", "/gw/api/kernelspecs"),
        ("GET", "/gw/api/kernelspecs/{name}"),
        ("GET", "/gw/kernelspecs/{name}/{file}"),
        ("HEAD", "/gw/kernelspecs/{name}/{file}"),
        ("GET", "/gw/api/kernels"),
        ("POST", "/gw/api/kernels"),
        ("GET", "/gw/api/kernels/{kernel_id}"),
        ("DELETE", "/gw/api/kernels/{kernel_id}"),
        ("POST", "/gw/api/kernels/{kernel_id}/interrupt"),
        ("POST", "/gw/api/kernels/{kernel_id}/restart"),
        ("GET", "/gw/api/health/live"),
        ("GET", "/gw/api/health/ready"),
        ("GET", "/gw/api/sessions"),
        ("POST", "/gw/api/sessions"),
        ("GET", "/gw/api/sessions/{session_id}"),
        ("PATCH", "/gw/api/sessions/{session_id}"),
        ("DELETE", "/gw/api/sessions/{session_id}"),
    } <= found


def test_statuses_are_the_real_ones(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        assert "422" not in op["responses"], (method, path)
        assert op.get("description"), f"{method} {path} has no docstring"
    kernels = document["paths"]["/gw/api/kernels"]
    assert set(kernels["post"]["responses"]) >= {"201", "400", "403", "500", "503"}
    assert "204" in document["paths"]["/gw/api/kernels/{kernel_id}"]["delete"]["responses"]


def test_error_model(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["ErrorModel"]
    assert set(error["properties"]) == {"message", "reason"}
