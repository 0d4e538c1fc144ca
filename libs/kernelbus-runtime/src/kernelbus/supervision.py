"""Keeping the embedded deployment's processes running: a process that exits unasked is
restarted after a back-off, unless it is crash-looping (ADR 0012).

`RestartPolicy` is the pure decision (when to restart, when to give up); `Supervisor` polls the
children, restarts them and reports each restart; the children themselves (a service, the
nats-server) are in `kernelbus.children`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


class Child(Protocol):
    """A process the launcher keeps running."""

    name: str

    def start(self) -> None:
        """Start a new process (blocks until it is usable, where that can be told)."""

    def alive(self) -> bool: ...

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def stop(self, timeout: float) -> bool:
        """SIGTERM, SIGKILL after `timeout`; False if it had to be killed."""
        ...

    def log_tail(self, lines: int) -> str: ...


@dataclass
class RestartPolicy:
    """Back-off doubling from `initial` to `maximum`; more than `max_restarts` restarts within
    `window` seconds is a crash loop."""

    max_restarts: int = 5
    window: float = 60.0
    initial: float = 0.25
    maximum: float = 10.0
    _recent: deque[float] = field(default_factory=deque)

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before restarting a process that exited at `now`; None: give up."""
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return None
        self._recent.append(now)
        return float(min(self.initial * 2 ** (len(self._recent) - 1), self.maximum))


@dataclass(frozen=True)
class Restart:
    """What `Supervisor` reports after it restarted a child."""

    service: str
    exit_code: int | None
    restarts: int
    delay: float
    pid: int


@dataclass(frozen=True)
class CrashLoop:
    """Why the supervisor gave up: the service, its last exit code and its last log lines."""

    service: str
    exit_code: int | None
    restarts: int
    log_tail: str

    def message(self) -> str:
        return (
            f"{self.service} is crash-looping: it exited (code {self.exit_code}) again after "
            f"{self.restarts} restarts; stopping everything. Its last log lines:\n{self.log_tail}"
        )


OnRestart = Callable[[Restart], Awaitable[None]]


@dataclass
class _Watched:
    child: Child
    policy: RestartPolicy
    restarts: int = 0
    restarting: asyncio.Task[None] | None = None
    starting: bool = False
    """The new process is being started (in a thread): let that finish, never cancel it."""


class Supervisor:
    """Restarts children that exit until `stop` is set or one crash-loops."""

    def __init__(
        self,
        children: list[Child],
        policy: Callable[[], RestartPolicy],
        on_restart: OnRestart,
        poll_interval: float = 0.1,
    ) -> None:
        self._watched = [_Watched(child, policy()) for child in children]
        self._on_restart = on_restart
        self._poll = poll_interval

    def restarts(self, name: str) -> int:
        return next((w.restarts for w in self._watched if w.child.name == name), 0)

    async def run(self, stop: asyncio.Event) -> CrashLoop | None:
        """Watch until `stop` (returns None) or a crash loop (returns it, children untouched)."""
        try:
            while not stop.is_set():
                for watched in self._watched:
                    if watched.restarting is not None or watched.child.alive():
                        continue
                    if (loop := self._exited(watched)) is not None:
                        return loop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll)
            return None
        finally:
            await self._cancel_restarts()

    def _exited(self, watched: _Watched) -> CrashLoop | None:
        child = watched.child
        delay = watched.policy.next_delay(time.monotonic())
        if delay is None:
            return CrashLoop(child.name, child.returncode, watched.restarts, child.log_tail(30))
        log.warning(
            "%s exited with %s; restarting it in %.2f s", child.name, child.returncode, delay
        )
        watched.restarting = asyncio.create_task(self._restart(watched, delay))
        return None

    async def _restart(self, watched: _Watched, delay: float) -> None:
        child = watched.child
        exit_code = child.returncode
        await asyncio.sleep(delay)
        watched.starting = True
        try:
            await asyncio.to_thread(child.start)
        except Exception as exc:  # the next poll sees it dead and counts another exit
            log.error("restarting %s failed: %s", child.name, exc)
            return
        finally:
            watched.starting = False
            watched.restarting = None
        watched.restarts += 1
        log.warning("%s restarted (pid %d, restart %d)", child.name, child.pid, watched.restarts)
        try:
            restart = Restart(child.name, exit_code, watched.restarts, delay, child.pid)
            await self._on_restart(restart)
        except Exception:
            log.exception("reporting the restart of %s failed", child.name)

    async def _cancel_restarts(self) -> None:
        """Cancel back-off waits; let starts under way finish, so that the launcher, which
        stops every child next, also stops a process started in this very moment."""
        tasks = []
        for watched in self._watched:
            if watched.restarting is None:
                continue
            if not watched.starting:
                watched.restarting.cancel()
            tasks.append(watched.restarting)
        await asyncio.gather(*tasks, return_exceptions=True)
