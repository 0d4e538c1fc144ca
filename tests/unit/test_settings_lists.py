"""Comma-list settings: one syntax (`kernelbus.settings.comma_list`), parsed by the settings
classes, and a bad value refuses to start naming its environment variable."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from kernelbus.settings import BusSettings, comma_list, env_name, load_settings
from kernelbus_api.settings import ApiSettings
from kernelbus_worker.settings import WorkerSettings


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        ("", ()),
        ("a", ("a",)),
        ("a,b", ("a", "b")),
        (" a , b ,, ", ("a", "b")),
        (",", ()),
        ("b,a,b", ("b", "a", "b")),  # order and repeats kept: NATS_URL's order matters
    ],
)
def test_comma_list_syntax(raw: str, items: tuple[str, ...]) -> None:
    assert comma_list(raw) == items


def test_nats_servers_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:1, tls://b:2")
    assert BusSettings().nats_servers == ("nats://a:1", "tls://b:2")
    monkeypatch.setenv("NATS_URL", "nats://a:1,http://b:2")
    with pytest.raises(ValidationError):
        BusSettings()


def test_worker_lists_from_the_documented_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNELBUS_WORKER_POOL", "python3=2,r=1")
    monkeypatch.setenv("KERNELBUS_WORKER_KERNELSPECS", "python3, ir")
    monkeypatch.setenv("KERNELBUS_WORKER_INHERITED_ENV", "PATH,LANG")
    monkeypatch.setenv(
        "KERNELBUS_WORKER_UNTRACKED_MESSAGE_TYPES", "comm_info_request, kernel_info_request"
    )
    settings = WorkerSettings()
    assert settings.pool_sizes == {"python3": 2, "r": 1}
    assert settings.kernelspec_names == ["python3", "ir"]
    assert settings.inherited_names == ["PATH", "LANG"]
    assert settings.untracked_types == frozenset({"comm_info_request", "kernel_info_request"})


def test_worker_defaults_are_empty_or_documented() -> None:
    settings = WorkerSettings()
    assert settings.pool_sizes == {}
    assert settings.kernelspec_names == []
    assert "PATH" in settings.inherited_names


@pytest.mark.parametrize(
    "changes",
    [
        {"pool": "python3"},
        {"pool": "python3=two"},
        {"pool": "=2"},
        {"pool": "python3=-1"},
        {"kernelspecs": "python3,bad name"},
        {"inherited_env": "PATH,A=B"},
        {"untracked_message_types": "a;b"},
    ],
)
def test_worker_bad_lists_are_refused(changes: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**changes)  # type: ignore[arg-type]


def test_api_lists_from_the_documented_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNELBUS_ALLOW_ORIGIN", "https://a.example, https://b.example")
    monkeypatch.setenv("KERNELBUS_TRUSTED_PROXIES", "10.0.0.1,10.0.0.2")
    monkeypatch.setenv("KERNELBUS_AUTHORIZED_USERS", "alice, bob")
    monkeypatch.setenv("KERNELBUS_UNAUTHORIZED_USERS", "root,mallory")
    monkeypatch.setenv("KERNELBUS_ALLOWED_MESSAGE_TYPES", "execute_request, comm_msg")
    monkeypatch.setenv("KERNELBUS_CLIENT_ENVS", "A,B")
    s = ApiSettings()
    assert s.allowed_origins == frozenset({"https://a.example", "https://b.example"})
    assert s.trusted_proxy_set == frozenset({"10.0.0.1", "10.0.0.2"})
    assert s.authorized_user_set == frozenset({"alice", "bob"})
    assert s.unauthorized_user_set == frozenset({"root", "mallory"})
    assert s.allowed_message_type_set == frozenset({"execute_request", "comm_msg"})
    assert s.client_env_names == frozenset({"A", "B"})


def test_api_list_defaults() -> None:
    s = ApiSettings()
    assert s.unauthorized_user_set == frozenset({"root"})
    assert s.authorized_user_set == s.allowed_message_type_set == frozenset()
    assert s.allowed_origins == s.trusted_proxy_set == frozenset()


def test_env_name_of_a_field_and_of_an_alias() -> None:
    assert env_name(WorkerSettings, ("pool",)) == "KERNELBUS_WORKER_POOL"
    assert env_name(ApiSettings, ("max_kernels",)) == "KERNELBUS_MAX_KERNELS"
    assert env_name(WorkerSettings, ("NATS_URL",)) == "NATS_URL"


def test_load_settings_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KERNELBUS_WORKER_POOL", "python3")
    monkeypatch.setenv("NATS_URL", "http://x")
    with pytest.raises(SystemExit) as exited:
        load_settings(WorkerSettings, "kernelbus-worker")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "kernelbus-worker: invalid settings, refusing to start:" in err
    assert "KERNELBUS_WORKER_POOL: " in err and "name=count" in err
    assert "NATS_URL: " in err


def test_worker_refuses_to_start_on_a_bad_pool() -> None:
    code = "from kernelbus_worker.__main__ import main; main()"
    env = {"KERNELBUS_WORKER_POOL": "python3=lots", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "KERNELBUS_WORKER_POOL" in done.stderr
    assert "Traceback" not in done.stderr
