"""`kernelbus-worker-init`: the kernel-worker container's entrypoint (PID 1).

A worker process that crashes leaves its kernels running (they run in their own session). In a
container whose PID 1 is the worker, the crash ends the container and every kernel with it.
This init instead:

- pins `KERNELBUS_WORKER_ID` once (the worker's own default is random per process), so every
  restarted worker has the same id and re-adopts the kernels its predecessor left;
- restarts the worker after an unexpected exit, with a short backoff;
- reaps every child, including kernels orphaned by a crashed worker (PID 1's duty; outside a
  container it makes itself the child subreaper, so the same holds);
- forwards SIGTERM/SIGINT to the worker and exits with the worker's status once it stopped;
- gives up after `CRASH_LIMIT` crashes within `CRASH_WINDOW` seconds and exits 1, so the
  container's restart policy (a new container, kernels lost and marked dead) takes over;
- answers the worker's liveness pings (`kb.worker.<id>.ping`) on a NATS connection of its own
  for as long as it runs, which is as long as the container and its kernels live: a restarting
  worker process is not a lost worker, a killed container is one at once (ADR 0016).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from types import FrameType

from kernelbus import bus, subjects
from kernelbus.logs import setup_logging
from kernelbus.settings import BusSettings

log = logging.getLogger("kernelbus_worker.init")

CRASH_LIMIT = 5
CRASH_WINDOW = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
_PR_SET_CHILD_SUBREAPER = 36


def pinned_env(environ: dict[str, str]) -> dict[str, str]:
    """The worker's environment with a worker id fixed for the life of this init."""
    env = dict(environ)
    if not env.get("KERNELBUS_WORKER_ID"):
        env["KERNELBUS_WORKER_ID"] = f"{socket.gethostname()[:20]}-{uuid.uuid4().hex[:8]}"
    return env


class CrashLoop:
    """Crash times within the window; `record` says whether to restart once more."""

    def __init__(self, limit: int = CRASH_LIMIT, window: float = CRASH_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.crashes: deque[float] = deque()

    def record(self, now: float) -> bool:
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.window:
            self.crashes.popleft()
        return len(self.crashes) < self.limit

    def backoff(self) -> float:
        return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (len(self.crashes) - 1)))


class Init:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self.worker_id = env["KERNELBUS_WORKER_ID"]
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping: int | None = None
        self.crashes = CrashLoop()
        self.restarts = 0

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = signum
        if self.child is not None and self.child.returncode is None:
            self.child.send_signal(signum)

    def _spawn(self) -> None:
        self.child = subprocess.Popen(self.command, env=self.env)
        log.info(
            "worker process started (pid %d, restarts %d)",
            self.child.pid,
            self.restarts,
            extra={"worker_id": self.worker_id},
        )

    def _wait_child(self) -> int:
        """Reap every exited child until the worker itself exits; its exit status."""
        assert self.child is not None
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == self.child.pid:
                code = os.waitstatus_to_exitcode(status)
                self.child.returncode = code
                return code

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        self._spawn()
        while True:
            code = self._wait_child()
            if self.stopping is not None:
                log.info("worker stopped (%d)", code, extra={"worker_id": self.worker_id})
                return 0 if code in (0, -self.stopping) else code
            if not self.crashes.record(time.monotonic()):
                log.error(
                    "worker crashed %d times in %.0f s: giving up (exit %d)",
                    len(self.crashes.crashes),
                    self.crashes.window,
                    code,
                    extra={"worker_id": self.worker_id},
                )
                return 1
            delay = self.crashes.backoff()
            log.warning(
                "worker process exited unexpectedly (%d): restarting in %.1f s with the same id",
                code,
                delay,
                extra={"worker_id": self.worker_id},
            )
            deadline = time.monotonic() + delay
            while self.stopping is None and time.monotonic() < deadline:
                _reap_orphans()
                time.sleep(0.05)
            if self.stopping is not None:
                return 0
            self.restarts += 1
            self._spawn()


class PingAnswerer(threading.Thread):
    """Answers `kb.worker.<id>.ping` from this process, in a daemon thread with its own event
    loop, so that the culler's probe sees the worker's host alive while the worker process is
    being restarted (Python start-up alone takes seconds on a loaded host). Never fatal: without
    NATS it retries, and the worker process answers the same subject itself."""

    RETRY = 2.0

    def __init__(self, worker_id: str) -> None:
        super().__init__(name="ping-answerer", daemon=True)
        self.worker_id = worker_id
        self.answering = threading.Event()

    def run(self) -> None:
        asyncio.run(self._answer())

    async def _answer(self) -> None:
        extra = {"worker_id": self.worker_id}
        while True:
            try:
                settings = BusSettings()  # NATS_URL, NATS_USER, ... of this environment
                nc = await bus.connect(
                    settings, name=f"worker-init-{self.worker_id}", role="worker"
                )
                await bus.answer_pings(nc, subjects.worker_ping(self.worker_id))
                break
            except Exception as exc:
                log.warning("cannot answer liveness pings yet (%s); retrying", exc, extra=extra)
                await asyncio.sleep(self.RETRY)
        log.info("answering liveness pings for the worker", extra=extra)
        self.answering.set()
        await asyncio.Event().wait()  # until the process exits (that closes the connection)


def _reap_orphans() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _become_subreaper() -> None:
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def main() -> None:
    setup_logging(
        os.environ.get("KERNELBUS_LOG_FORMAT", "text"),
        os.environ.get("KERNELBUS_LOG_LEVEL", "INFO").upper(),
    )
    _become_subreaper()
    beside = Path(sys.executable).parent / "kernelbus-worker"
    command = sys.argv[1:] or [str(beside) if beside.exists() else "kernelbus-worker"]
    env = pinned_env(dict(os.environ))
    PingAnswerer(env["KERNELBUS_WORKER_ID"]).start()
    sys.exit(Init(command, env).run())


if __name__ == "__main__":
    main()
