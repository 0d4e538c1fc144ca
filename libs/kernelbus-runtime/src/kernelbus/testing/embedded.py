"""`kernelbus run` as a user runs it, for e2e tests and benchmarks: free ports, a temporary
data dir, its own process group; every process it started is found (and killed) by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kernelbus.natsserver import free_port
from kernelbus.processes import parent_pid, pid_running, wait_for
from kernelbus.testing.reaper import command_line, descendants, kill_tree

SERVICE_NAMES = ("kernelbus-api", "kernelbus-worker", "kernelbus-culler", "kernelbus-events")


@dataclass
class EmbeddedRun:
    """One `kernelbus run` child: ports, token, data dir, its output file."""

    root: Path
    token: str = "embedded-token"
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    events_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    seen: dict[int, str] = field(default_factory=dict)
    """Every descendant ever observed (`census`), pid → command line, for the final check."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.events_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def out(self) -> Path:
        return self.root / "out.txt"

    def output(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, ready_timeout: float = 90, wait: bool = True) -> None:
        """Start `kernelbus run`; with `wait`, return once it printed its banner."""
        env = {
            **os.environ,
            "KERNELBUS_PORT": str(self.port),
            "KERNELBUS_AUTH_TOKEN": self.token,
            "KERNELBUS_DATA_DIR": str(self.data_dir),
            "KERNELBUS_EVENTS_PORT": str(self.events_port),
            "KERNELBUS_NATS_PORT": str(self.nats_port),
            **self.extra_env,
        }
        launcher = Path(sys.executable).parent / "kernelbus"
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.out, "w") as handle:
            self.process = subprocess.Popen(
                [str(launcher), "run"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # a process group of its own, as in a terminal
            )
        if wait:
            wait_for(self._banner, ready_timeout, "the launcher banner")

    def _banner(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"kernelbus run exited early:\n{self.output()}")
        return "Kernelbus is running" in self.output()

    def census(self) -> dict[int, str]:
        """Live descendants of the launcher, pid → command line (remembered in `seen`)."""
        assert self.process is not None
        found = {pid: command_line(pid) for pid in descendants(self.process.pid)}
        self.seen.update(found)
        return found

    def pids_of(self, name: str) -> list[int]:
        """Live service processes `name` (e.g. "kernelbus-worker", "nats-server", "ipykernel").

        A child forked by one of them that has not exec'd yet (a kernel being launched) still
        shows its parent's command line: it is not counted."""
        found = {pid for pid, line in self.census().items() if name in line and pid_running(pid)}
        return sorted(pid for pid in found if parent_pid(pid) not in found)

    def pid_of(self, name: str) -> int:
        pids = self.pids_of(name)
        if len(pids) != 1:
            raise AssertionError(f"expected one {name}, found {pids}: {self.census()}")
        return pids[0]

    def metrics(self) -> str:
        """The launcher's /metrics text (its URL is in the banner)."""
        match = re.search(r"metrics: +(\S+)", self.output())
        if match is None:
            raise AssertionError(f"no metrics URL in the banner:\n{self.output()}")
        with urllib.request.urlopen(match.group(1), timeout=5) as response:
            return str(response.read().decode())

    def restarts(self, service: str) -> float:
        """kernelbus_launcher_restarts_total of `service`."""
        line = f'kernelbus_launcher_restarts_total{{service="{service}"}} '
        for row in self.metrics().splitlines():
            if row.startswith(line):
                return float(row[len(line) :])
        raise AssertionError(f"no restart counter for {service}")

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the whole foreground process group."""
        assert self.process is not None
        self.census()
        os.killpg(self.process.pid, signal.SIGINT)

    def leftovers(self) -> list[str]:
        """Processes ever seen under the launcher that still run."""
        return [f"{pid} {line}" for pid, line in sorted(self.seen.items()) if self._same(pid, line)]

    @staticmethod
    def _same(pid: int, line: str) -> bool:
        """Still the process seen then (alive, same command line: not a reused pid)."""
        return pid_running(pid) and command_line(pid) == line

    def wait_all_gone(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.leftovers():
            time.sleep(0.05)
        return self.leftovers()

    def kill(self) -> None:
        """Whatever happened: the launcher and everything it ever started go, by pid."""
        if self.process is None:
            return
        left = descendants(self.process.pid) | {
            pid for pid, line in self.seen.items() if self._same(pid, line)
        }
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        kill_tree(left)
