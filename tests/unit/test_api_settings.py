"""ApiSettings validators: invalid values refuse to start."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from kernelbus_api.cors import cors_headers
from kernelbus_api.origin import origin_allowed
from kernelbus_api.settings import ApiSettings


def test_defaults() -> None:
    s = ApiSettings()
    assert (s.base_url, s.list_kernels, s.default_kernel_name) == ("/", True, "python3")
    assert (s.launch_timeout, s.kernel_info_timeout, s.max_kernels) == (40.0, 60.0, None)


@pytest.mark.parametrize(("raw", "expected"), [("/gw", "/gw/"), ("/a/b/", "/a/b/")])
def test_base_url_is_normalised(raw: str, expected: str) -> None:
    settings = ApiSettings(base_url=raw)
    assert settings.base_url == expected
    assert settings.prefix == expected.rstrip("/")


@pytest.mark.parametrize(
    "changes",
    [
        {"base_url": "gw/"},
        {"base_url": "/a//b"},
        {"max_kernels": 0},
        {"max_kernels_per_user": -1},
        {"default_kernel_name": "bad name"},
        {"force_kernel_name": "a/b"},
        {"launch_timeout": 0},
        {"kernel_info_timeout": -1},
        {"allow_origin": "example.com"},
        {"allow_credentials": "yes"},
        {"allow_headers": "X-A\r\nX-B"},
        {"max_age": -1},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiSettings(**changes)  # type: ignore[arg-type]


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNELBUS_LIST_KERNELS", "false")
    monkeypatch.setenv("KERNELBUS_MAX_KERNELS", "3")
    monkeypatch.setenv("KERNELBUS_CLIENT_ENVS", "A, B")
    s = ApiSettings()
    assert (s.list_kernels, s.max_kernels, s.client_env_names) == (False, 3, frozenset({"A", "B"}))


def test_service_refuses_to_start_on_invalid_settings() -> None:
    code = "from kernelbus_api.__main__ import main; main()"
    env = {"KERNELBUS_MAX_KERNELS": "zero", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "KERNELBUS_MAX_KERNELS" in done.stderr
    assert "Traceback" not in done.stderr


def test_origin_rules() -> None:
    strict = ApiSettings()
    assert origin_allowed(strict, None, "h:1")
    assert origin_allowed(strict, "http://h:1", "h:1")
    assert not origin_allowed(strict, "http://evil", "h:1")
    listed = ApiSettings(allow_origin="https://lab.example")
    assert origin_allowed(listed, "https://lab.example", "h:1")
    assert origin_allowed(ApiSettings(allow_origin="*"), "http://evil", "h:1")


def test_cors_headers() -> None:
    settings = ApiSettings(
        allow_origin="*",
        allow_credentials="true",
        allow_headers="Content-Type",
        allow_methods="GET,POST",
        expose_headers="Location",
        max_age=600,
    )
    assert cors_headers(settings, "http://x") == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Allow-Methods": "GET,POST",
        "Access-Control-Expose-Headers": "Location",
        "Access-Control-Max-Age": "600",
    }
    assert cors_headers(ApiSettings(), "http://x") == {}
    listed = cors_headers(ApiSettings(allow_origin="http://x"), "http://x")
    assert listed["Access-Control-Allow-Origin"] == "http://x"
