"""Keeping the embedded deployment's processes running: a process that exits unasked is
restarted after a back-off, unless it is crash-looping (ADR 0012).

`RestartPolicy` is the pure decision (when to restart, when to give up); `Supervisor` notices
exits, restarts the children and reports each restart; the children themselves (a service,
the nats-server) are in `kernelbus.children`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

POLL = 0.1
"""Seconds between looks at the children when their exits cannot be waited for."""
WAKEFUL_POLL = 2.0
"""Seconds between looks when every child's exit wakes the supervisor (a pidfd each): only a
safety net then, so an idle launcher does not wake ten times a second (ADR 0029)."""


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
    exit_fd: tuple[int, int] | None = None
    """(pid, pidfd) of the process whose exit wakes the supervisor."""


class Supervisor:
    """Restarts children that exit until `stop` is set or one crash-loops."""

    def __init__(
        self,
        children: list[Child],
        policy: Callable[[], RestartPolicy],
        on_restart: OnRestart,
        poll_interval: float | None = None,
        wake_on_exit: bool = True,
    ) -> None:
        """`wake_on_exit`: wait for each child's exit on a pidfd (Linux), falling back to
        polling every `POLL` s where that fails; `poll_interval` overrides either interval."""
        self._watched = [_Watched(child, policy()) for child in children]
        self._on_restart = on_restart
        self._wakeful = wake_on_exit and hasattr(os, "pidfd_open")
        self._interval = poll_interval
        self._wake = asyncio.Event()

    @property
    def _poll(self) -> float:
        if self._interval is not None:
            return self._interval
        return WAKEFUL_POLL if self._wakeful else POLL

    def restarts(self, name: str) -> int:
        return next((w.restarts for w in self._watched if w.child.name == name), 0)

    def waits_for_exit(self, name: str) -> bool:
        """The exit of `name`'s current process wakes the supervisor (its pidfd is watched)."""
        for watched in self._watched:
            if watched.child.name == name and watched.exit_fd is not None:
                return watched.exit_fd[0] == watched.child.pid
        return False

    async def run(self, stop: asyncio.Event) -> CrashLoop | None:
        """Watch until `stop` (returns None) or a crash loop (returns it, children untouched)."""
        relay = asyncio.create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                self._wake.clear()
                for watched in self._watched:
                    if watched.restarting is not None:
                        continue
                    if watched.child.alive():
                        self._watch_exit(watched)
                        continue
                    if (loop := self._exited(watched)) is not None:
                        return loop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            return None
        finally:
            relay.cancel()
            for watched in self._watched:
                self._unwatch_exit(watched)
            await self._cancel_restarts()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    def _watch_exit(self, watched: _Watched) -> None:
        """Be woken when the child's current process exits (a pidfd is readable then)."""
        pid = watched.child.pid
        if not self._wakeful or (watched.exit_fd is not None and watched.exit_fd[0] == pid):
            return
        self._unwatch_exit(watched)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            if watched.child.alive():  # a pid that is not a process of ours: poll instead
                self._wakeful = False
            else:
                self._wake.set()  # gone already (reaped since `alive`): look again now
            return
        except OSError as exc:  # no pidfds here (old kernel, seccomp): poll instead
            log.info("cannot wait for process exits (%s); polling every %.1f s", exc, POLL)
            self._wakeful = False
            return
        watched.exit_fd = (pid, fd)
        asyncio.get_running_loop().add_reader(fd, self._on_exit, watched)

    def _on_exit(self, watched: _Watched) -> None:
        self._unwatch_exit(watched)
        self._wake.set()

    def _unwatch_exit(self, watched: _Watched) -> None:
        if watched.exit_fd is not None:
            fd = watched.exit_fd[1]
            watched.exit_fd = None
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

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
            self._wake.set()  # watch the new process's exit (or see that it died already)
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
