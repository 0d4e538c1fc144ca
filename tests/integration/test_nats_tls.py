"""TLS on the bus over loopback with a generated CA (trustme): the embedded server configured
as `kernelbus run` configures it (KERNELBUS_NATS_SERVER_TLS_CERT / _KEY, client certificates
required when the services have one), real services connecting with NATS_TLS_CA /
NATS_TLS_CERT / NATS_TLS_KEY, and clients without the CA or without a certificate refused."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
import trustme
import yaml

from kernelbus import bus, natsauth, natsserver
from kernelbus.settings import BusSettings
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration


@dataclass
class TlsBus:
    server: natsserver.NatsServer
    credentials: natsauth.Credentials
    url: str
    ca: Path
    cert: Path
    key: Path

    def env(self, service: str) -> dict[str, str]:
        return {
            **self.credentials.env_for(service),
            "NATS_TLS_CA": str(self.ca),
            "NATS_TLS_CERT": str(self.cert),
            "NATS_TLS_KEY": str(self.key),
        }

    def settings(self, **overrides: str | None) -> BusSettings:
        env = self.env("kernelbus-api")
        values: dict[str, str | None] = {
            "nats_url": self.url,
            "nats_user": env["NATS_USER"],
            "nats_password": env["NATS_PASSWORD"],
            "nats_tls_ca": str(self.ca),
            "nats_tls_cert": str(self.cert),
            "nats_tls_key": str(self.key),
            "nats_connect_attempts": "1",
            **overrides,
        }
        return BusSettings.model_validate(values)


@pytest.fixture(scope="module")
def tls_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBus]:
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("kernelbus-service")
    ca_file, server_pem, client_pem = root / "ca.pem", root / "server.pem", root / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    client_cert.cert_chain_pems[0].write_to_path(str(client_pem))
    client_key = root / "client.key"
    client_cert.private_key_pem.write_to_path(str(client_key))
    with pytest.MonkeyPatch.context() as env:
        # Exactly what a user exports before `make run`.
        env.setenv("KERNELBUS_NATS_SERVER_TLS_CERT", str(server_pem))
        env.setenv("KERNELBUS_NATS_SERVER_TLS_KEY", str(server_pem))
        env.setenv("NATS_TLS_CA", str(ca_file))
        env.setenv("NATS_TLS_CERT", str(client_pem))
        env.setenv("NATS_TLS_KEY", str(client_key))
        credentials, extra = natsauth.server_config(root / "nats")
        server = natsserver.start(root / "nats", None, extra, log_file=root / "nats.log")
        url = natsauth.client_url(server.url)
    assert url.startswith("tls://")
    try:
        yield TlsBus(server, credentials, url, ca_file, client_pem, client_key)
    finally:
        server.stop()


async def test_a_service_connects_over_tls_with_its_certificate(tls_bus: TlsBus) -> None:
    nc = await bus.connect(tls_bus.settings(), name="tls-probe", role="api")
    try:
        assert nc.is_connected
        await bus.ensure_infrastructure(nc.jetstream(timeout=5))
    finally:
        await bus.close(nc)


async def test_a_client_without_the_ca_is_refused(tls_bus: TlsBus) -> None:
    # The system trust store does not know the generated CA.
    settings = tls_bus.settings(nats_tls_ca=None)
    with pytest.raises(ConnectionError) as refused:
        await bus.connect(settings, name="no-ca", role="api")
    assert "certificate verify failed" in str(refused.value).lower()


async def test_a_client_without_a_certificate_is_refused(tls_bus: TlsBus) -> None:
    settings = tls_bus.settings(nats_tls_cert=None, nats_tls_key=None)
    with pytest.raises((ConnectionError, nats.errors.Error, ssl.SSLError, OSError)):
        nc = await bus.connect(settings, name="no-cert", role="api")
        try:  # TLS 1.3 reports a refused client certificate after the handshake
            await nc.flush(timeout=5)
        finally:
            await nc.close()


async def test_plaintext_is_refused(tls_bus: TlsBus) -> None:
    plain = tls_bus.url.replace("tls://", "nats://")
    env = tls_bus.env("kernelbus-api")
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            plain,
            user=env["NATS_USER"],
            password=env["NATS_PASSWORD"],
            allow_reconnect=False,
            max_reconnect_attempts=1,
        )


def test_worker_and_api_run_a_kernel_over_tls(tls_bus: TlsBus, tmp_path: Path) -> None:
    services = Services(tmp_path, tls_bus.url)
    try:
        services.worker(tls_bus.env("kernelbus-worker"))
        api = services.api(tls_bus.env("kernelbus-api"))
        with httpx.Client(base_url=api.url, headers=api.headers, timeout=60) as http:
            started = http.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kid = started.json()["id"]
            assert http.get(f"/api/kernels/{kid}").status_code == 200
            assert http.delete(f"/api/kernels/{kid}").status_code == 204
    finally:
        services.stop_all()


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_compose_overlay_puts_every_service_on_tls() -> None:
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    overlay = yaml.safe_load((DEPLOY / "compose.tls.yaml").read_text())["services"]
    assert set(overlay) == set(base)
    assert "/etc/nats/nats-tls.conf" in overlay["nats"]["command"]
    for name in set(base) - {"nats"}:
        env = overlay[name]["environment"]
        assert env["NATS_URL"].startswith("tls://"), name
        for setting in ("NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY"):
            assert env[setting].startswith("/etc/kernelbus/tls/"), (name, setting)
        BusSettings.model_validate(env)  # names the settings class knows


async def test_the_compose_tls_config_runs_on_a_real_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats-tls.conf includes the rendered nats.conf (compose's users) and requires TLS with
    client certificates: run it with the generated CA's files in place of the mounts."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("kernelbus-service")
    files = {
        "ca.pem": ca.cert_pem,
        "nats.pem": server.cert_chain_pems[0],
        "nats-key.pem": server.private_key_pem,
        "client.pem": client.cert_chain_pems[0],
        "client-key.pem": client.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / name))
    store = tmp_path / "store"
    store.mkdir()
    # compose's file listens on fixed ports with a /data store: keep its users only.
    users = (DEPLOY / "nats" / "nats.conf").read_text().split("authorization {", 1)[1]
    (store / "nats.conf").write_text("authorization {" + users)
    tls_conf = (DEPLOY / "nats" / "nats-tls.conf").read_text()
    (store / "tls.conf").write_text(tls_conf.replace("/etc/kernelbus/tls", str(tmp_path)))
    passwords = {}
    for user in ("API", "WORKER", "CULLER", "EVENTS"):
        passwords[user] = f"pw-{user.lower()}"
        monkeypatch.setenv(f"KERNELBUS_NATS_{user}_PASSWORD", passwords[user])
    started = natsserver.start(store, None, "include ./tls.conf\n", log_file=tmp_path / "n.log")
    try:
        settings = BusSettings(
            nats_url=natsauth.client_url(started.url).replace("nats://", "tls://"),
            nats_user="api",
            nats_password=passwords["API"],
            nats_tls_ca=str(tmp_path / "ca.pem"),
            nats_tls_cert=str(tmp_path / "client.pem"),
            nats_tls_key=str(tmp_path / "client-key.pem"),
            nats_connect_attempts=1,
        )
        nc = await bus.connect(settings, name="compose-tls", role="api")
        try:
            assert (await nc.jetstream(timeout=5).account_info()).limits is not None
        finally:
            await bus.close(nc)
    finally:
        started.stop()
