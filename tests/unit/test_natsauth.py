"""kernelbus.natsauth as pure logic: credentials kept private and stable, the generated
server configuration (the real server runs it in tests/integration/test_embedded_nats_auth.py
and test_nats_tls.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kernelbus import natsauth


def test_credentials_are_created_private_and_reused(tmp_path: Path) -> None:
    users = natsauth.load_permissions()
    first = natsauth.ensure_credentials(tmp_path / "nats", users)
    assert set(first.passwords) == set(users)
    assert len(set(first.passwords.values())) == len(users)  # one password each
    assert stat.S_IMODE(first.file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "nats").stat().st_mode) == 0o700
    assert natsauth.ensure_credentials(tmp_path / "nats", users).passwords == first.passwords


def test_a_damaged_credentials_file_is_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "nats"
    directory.mkdir()
    (directory / "credentials.json").write_text("not json")
    (directory / "credentials.json").chmod(0o644)
    credentials = natsauth.ensure_credentials(directory, natsauth.load_permissions())
    assert json.loads(credentials.file.read_text()) == credentials.passwords
    assert stat.S_IMODE(credentials.file.stat().st_mode) == 0o600


def test_service_environments(tmp_path: Path) -> None:
    credentials = natsauth.ensure_credentials(tmp_path, natsauth.load_permissions())
    env = credentials.env_for("kernelbus-worker")
    assert env == {"NATS_USER": "worker", "NATS_PASSWORD": credentials.passwords["worker"]}
    user, password = credentials.consumer
    assert f"NATS_USER={user} NATS_PASSWORD={password}" in natsauth.consumer_hint(credentials)


def test_tls_is_configured_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KERNELBUS_NATS_SERVER_TLS_CERT", "NATS_TLS_CA", "NATS_TLS_CERT"):
        monkeypatch.delenv(name, raising=False)
    _, plain = natsauth.server_config(tmp_path / "a")
    assert "tls {" not in plain
    assert natsauth.client_url("nats://127.0.0.1:1") == "nats://127.0.0.1:1"
    monkeypatch.setenv("KERNELBUS_NATS_SERVER_TLS_CERT", "/c.pem")
    monkeypatch.setenv("KERNELBUS_NATS_SERVER_TLS_KEY", "/k.pem")
    _, server_only = natsauth.server_config(tmp_path / "b")
    assert 'cert_file: "/c.pem"' in server_only and "verify" not in server_only
    assert natsauth.client_url("nats://127.0.0.1:1") == "tls://127.0.0.1:1"
    monkeypatch.setenv("NATS_TLS_CA", "/ca.pem")
    monkeypatch.setenv("NATS_TLS_CERT", "/client.pem")
    _, mutual = natsauth.server_config(tmp_path / "c")
    assert 'ca_file: "/ca.pem"' in mutual and "verify: true" in mutual
