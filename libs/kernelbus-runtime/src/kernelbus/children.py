"""The processes of the embedded deployment as `supervision.Child`ren: a Kernelbus service (a
new log file per incarnation) and the private nats-server (same port, same store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, spawn


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServiceChild:
    """A service started from `command` with `env`, logging to `log_dir`."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_dir: Path
    process: ServiceProcess | None = None

    def start(self) -> None:
        self.process = spawn(self.name, self.command, self.env, self.log_dir)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def returncode(self) -> int | None:
        return self.process.process.returncode if self.process else None

    def stop(self, timeout: float) -> bool:
        return self.process.stop(timeout) if self.process else True

    def log_tail(self, lines: int) -> str:
        return _tail(self.process.log(), lines) if self.process else ""


@dataclass
class NatsChild:
    """The private nats-server: every incarnation listens on the same port with the same
    JetStream store, so clients reconnect to it and find their streams and buckets."""

    store_dir: Path
    port: int | None
    log_file: Path
    name: str = "nats-server"
    extra_config: str = ""
    """Appended to the server's configuration: the authorization (and TLS) blocks, so every
    incarnation has the same users, and a cluster block for a local cluster."""
    server: natsserver.NatsServer | None = field(default=None, repr=False)

    def start(self) -> None:
        self.server = natsserver.start(
            self.store_dir, self.port, extra_config=self.extra_config, log_file=self.log_file
        )
        self.port = self.server.port  # a free port chosen once is kept for every restart

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    @property
    def pid(self) -> int:
        return self.server.process.pid if self.server else 0

    @property
    def returncode(self) -> int | None:
        return self.server.process.returncode if self.server else None

    def stop(self, timeout: float) -> bool:
        if self.server is None:
            return True
        return self.server.stop(timeout)

    def log_tail(self, lines: int) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return ""
