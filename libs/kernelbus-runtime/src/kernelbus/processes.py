"""Start Kernelbus services as real child processes and stop them by their own pid; find
kernels and iopub keepers by their command lines (psutil reads the process table)."""

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

import psutil


def terminate(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; always reaped. False if it had to be killed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return False
    return True


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
        return terminate(self.process, timeout)

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


def _command_lines() -> list[tuple[int, str]]:
    """(pid, command line joined by spaces) of every process but this one; a process whose
    command line cannot be read (gone meanwhile, not ours to read, a zombie) has ""."""
    own = os.getpid()
    return [
        (proc.pid, " ".join(proc.info["cmdline"] or ()))
        for proc in psutil.process_iter(["cmdline"], ad_value=None)
        if proc.pid != own
    ]


def is_kernel_under(cmdline: str, directory: Path) -> bool:
    """A kernel's command line names its connection file, `<runtime dir>/kernel-<id>.json`;
    the iopub keeper's names the runtime dir too, and is not a kernel."""
    return str(directory) in cmdline and "kernel-" in cmdline and KEEPER_MODULE not in cmdline


def is_keeper_of(cmdline: str, directory: Path) -> bool:
    return KEEPER_MODULE in cmdline and str(directory) in cmdline


def kernels_under(directory: Path) -> list[int]:
    """Pids of live processes whose command line names a file in `directory` (kernels are
    started with `-f <runtime dir>/kernel-<id>.json`)."""
    return [pid for pid, cmdline in _command_lines() if is_kernel_under(cmdline, directory)]


KEEPER_MODULE = "kernelbus_worker.keeper"
"""The iopub keeper a worker runs per runtime dir (`-m kernelbus_worker.keeper <dir>`)."""


def keepers_under(directory: Path) -> list[int]:
    """Pids of the iopub keepers serving `directory` (they outlive a crashed worker, as its
    kernels do, and stop by themselves a while after the last kernel there)."""
    return [pid for pid, cmdline in _command_lines() if is_keeper_of(cmdline, directory)]


_CONNECTION_FILE = re.compile(r"kernel-([^/\s]+)\.json")


def kernel_id_of(cmdline: str) -> str | None:
    """The kernel id in a kernel's command line (its connection file's name)."""
    match = _CONNECTION_FILE.search(cmdline)
    return match.group(1) if match else None


def orphaned_kernels(directory: Path) -> dict[str, int]:
    """Kernel id (from its connection file's name) → pid, for the kernels under `directory`
    whose worker is gone."""
    found = {}
    for pid, cmdline in _command_lines():
        kernel_id = kernel_id_of(cmdline)
        if kernel_id and is_kernel_under(cmdline, directory) and _orphaned(pid):
            found[kernel_id] = pid
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
    """Whether `pid`'s parent is not a kernel worker (a gone or unreadable one is not)."""
    try:
        parent = psutil.Process(pid).parent()
        return parent is None or "kernelbus-worker" not in " ".join(parent.cmdline())
    except psutil.Error:
        return True


def parent_pid(pid: int) -> int | None:
    """`pid`'s parent's pid; None when `pid` is gone."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not; one we may not inspect is)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of `pids` runs (gone or a zombie: a SIGKILL takes effect asynchronously,
    and a process we are not the parent of cannot be waited for); those still running."""
    deadline = time.monotonic() + timeout
    running = [pid for pid in pids if pid_running(pid)]
    while running and time.monotonic() < deadline:
        time.sleep(0.02)
        running = [pid for pid in running if pid_running(pid)]
    return running


def pid_stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP takes effect asynchronously: tests that freeze a
    process wait for this)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False
