"""Culler settings from the environment: defaults, fallbacks and refusals."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from kernelbus import tinyhttp
from kernelbus_culler.health import Liveness, route_for
from kernelbus_culler.settings import CullerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("KERNELBUS_CULLER_"):
            monkeypatch.delenv(key)


def test_defaults_follow_jupyter_server() -> None:
    settings = CullerSettings()
    assert settings.cull_idle_timeout == 0 and not settings.culling_enabled
    assert settings.cull_interval == 300
    assert not settings.cull_busy and not settings.cull_connected
    assert settings.kernelspec_timeouts == {}
    assert settings.culler_id.startswith("culler-")


def test_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNELBUS_CULLER_CULL_IDLE_TIMEOUT", "3")
    monkeypatch.setenv("KERNELBUS_CULLER_CULL_INTERVAL", "1")
    monkeypatch.setenv("KERNELBUS_CULLER_CULL_BUSY", "true")
    monkeypatch.setenv("KERNELBUS_CULLER_CULL_CONNECTED", "1")
    monkeypatch.setenv("KERNELBUS_CULLER_KERNELSPEC_TIMEOUTS", '{"python3": 600}')
    monkeypatch.setenv("KERNELBUS_CULLER_CULLER_ID", "c1")
    settings = CullerSettings()
    assert settings.culling_enabled and settings.cull_interval == 1
    assert settings.cull_busy and settings.cull_connected
    assert settings.kernelspec_timeouts == {"python3": 600}
    assert settings.culler_id == "c1"


@pytest.mark.parametrize("value", ["0", "-5"])
def test_non_positive_interval_falls_back_with_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    monkeypatch.setenv("KERNELBUS_CULLER_CULL_INTERVAL", value)
    with caplog.at_level(logging.WARNING):
        assert CullerSettings().cull_interval == 300
    assert "Invalid value for cull_interval" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CULL_IDLE_TIMEOUT", "-1"),
        ("CULL_IDLE_TIMEOUT", "soon"),
        ("KERNELSPEC_TIMEOUTS", "not json"),
        ("KERNELSPEC_TIMEOUTS", '{"python3": -1}'),
        ("KERNELSPEC_TIMEOUTS", '{"python3": "x"}'),
        ("CULLER_ID", "has space"),
        ("HEALTH_PORT", "70000"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"KERNELBUS_CULLER_{key}", value)
    with pytest.raises(ValidationError):
        CullerSettings()


def test_lease_outlives_a_shutdown_command() -> None:
    settings = CullerSettings(cull_interval=1, command_timeout=10)
    assert settings.lease_max_age >= 2 * settings.command_timeout


def test_health_endpoint_responses() -> None:
    live = Liveness(max_age=60)
    assert tinyhttp.answer(route_for(live), b"GET /health/live HTTP/1.1\r\n").startswith(
        b"HTTP/1.1 200"
    )
    assert tinyhttp.answer(route_for(live), b"GET /other HTTP/1.1\r\n").startswith(b"HTTP/1.1 404")
    assert tinyhttp.answer(route_for(live), b"garbage").startswith(b"HTTP/1.1 405")
    stalled = Liveness(max_age=0)
    assert tinyhttp.answer(route_for(stalled), b"GET /health/live HTTP/1.1\r\n").startswith(
        b"HTTP/1.1 503"
    )
