"""Events service settings come from the environment and refuse unsafe values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kernelbus_events.settings import EventsSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERNELBUS_DATA_DIR", raising=False)
    settings = EventsSettings()
    assert (settings.ip, settings.port) == ("127.0.0.1", 8889)
    assert settings.db_path == Path(".kernelbus/events.sqlite")
    assert settings.auth_token == ""


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERNELBUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KERNELBUS_AUTH_TOKEN", "secret")
    monkeypatch.setenv("KERNELBUS_EVENTS_PORT", "9999")
    settings = EventsSettings()
    assert settings.db_path == tmp_path / "events.sqlite"
    assert (settings.auth_token, settings.port) == ("secret", 9999)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KERNELBUS_EVENTS_PORT", "0"),
        ("KERNELBUS_EVENTS_MAX_DELIVER", "0"),
        ("KERNELBUS_EVENTS_ACK_WAIT", "0.1"),
        ("KERNELBUS_EVENTS_CONSUMER", "a.b"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        EventsSettings()
