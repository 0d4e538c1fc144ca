"""Start Kernelbus services as real child processes and stop them by their own pid."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout`; always reaped. False if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        return True

    def kill(self) -> None:
        """SIGKILL: the process dies without cleaning up (crash tests)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    log_dir: Path,
) -> ServiceProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}-{time.monotonic_ns()}.log"
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    return ServiceProcess(name, process, log_file, env)


def entry_point(name: str) -> list[str]:
    """The console script `name` installed next to this interpreter."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        raise FileNotFoundError(f"{name} is not installed in {script.parent}")
    return [str(script)]


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: ServiceProcess | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `condition` until true; fail early with the log if `process` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log()}")
        time.sleep(interval)
    tail = f"\n{process.log()[-4000:]}" if process else ""
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}{tail}")


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def kernels_under(directory: Path) -> list[int]:
    """Pids of live processes whose command line names a file in `directory` (kernels are
    started with `-f <runtime dir>/kernel-<id>.json`)."""
    marker = str(directory)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _cmdline(int(entry.name))
        if marker in cmdline and "kernel-" in cmdline and KEEPER_MODULE not in cmdline:
            found.append(int(entry.name))
    return found


KEEPER_MODULE = "kernelbus_worker.keeper"
"""The iopub keeper a worker runs per runtime dir (`-m kernelbus_worker.keeper <dir>`)."""


def keepers_under(directory: Path) -> list[int]:
    """Pids of the iopub keepers serving `directory` (they outlive a crashed worker, as its
    kernels do, and stop by themselves a while after the last kernel there)."""
    marker = str(directory)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _cmdline(int(entry.name))
        if KEEPER_MODULE in cmdline and marker in cmdline:
            found.append(int(entry.name))
    return found


_CONNECTION_FILE = re.compile(r"kernel-([^/\s]+)\.json")


def orphaned_kernels(directory: Path) -> dict[str, int]:
    """Kernel id (from its connection file's name) → pid, for the kernels under `directory`
    whose worker is gone."""
    found = {}
    for pid in kernels_under(directory):
        match = _CONNECTION_FILE.search(_cmdline(pid))
        if match and _orphaned(pid):
            found[match.group(1)] = pid
    return found


def kill_orphaned_kernels(directory: Path, include_adopted: bool = False) -> list[int]:
    """SIGKILL kernels under `directory` whose worker is gone (re-parented away from it).

    Kernels outlive a crashed worker on purpose (a successor adopts them); whoever ran that
    worker — a test, the embedded launcher — cleans up the ones nobody adopted. With
    `include_adopted`, every kernel under `directory` goes. The iopub keepers of `directory`
    go too once no kernel is left there.
    """
    killed = []
    for pid in kernels_under(directory):
        if include_adopted or _orphaned(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    if include_adopted or not kernels_under(directory):
        for pid in keepers_under(directory):  # nothing left to keep output of
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def _orphaned(pid: int) -> bool:
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        parent = (Path(f"/proc/{ppid}/cmdline").read_bytes()).decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return True
    return "kernelbus-worker" not in parent


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not; one we may not signal is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def pid_stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP takes effect asynchronously: tests that freeze a
    process wait for this)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False
