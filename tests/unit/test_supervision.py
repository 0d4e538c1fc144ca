"""The launcher's restart decisions: back-off, crash-loop detection, and the supervising loop
(over in-memory children: the real processes are in tests/e2e/test_launcher_supervision.py)."""

from __future__ import annotations

import asyncio

import pytest

from kernelbus.supervision import CrashLoop, Restart, RestartPolicy, Supervisor
from kernelbus.testing.waiting import until


def test_backoff_doubles_up_to_the_maximum() -> None:
    policy = RestartPolicy(max_restarts=10, window=60, initial=0.25, maximum=1.0)
    assert [policy.next_delay(float(t)) for t in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_more_restarts_than_allowed_within_the_window_is_a_crash_loop() -> None:
    policy = RestartPolicy(max_restarts=5, window=60)
    assert all(policy.next_delay(t) is not None for t in (0, 10, 20, 30, 40))
    assert policy.next_delay(50) is None


def test_restarts_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_restarts=2, window=60, initial=0.25)
    assert policy.next_delay(0) == 0.25
    assert policy.next_delay(30) == 0.5
    assert policy.next_delay(61) == 0.5  # the one at 0 left the window
    assert policy.next_delay(89) is None  # 30 and 61 are still in it
    assert policy.next_delay(200) == 0.25


class FakeChild:
    """A child whose process "dies" when the test says so."""

    def __init__(self, name: str, fail_starts: int = 0) -> None:
        self.name = name
        self.running = False
        self.starts = 0
        self.fail_starts = fail_starts
        self.code: int | None = None
        self.exit_seen = asyncio.Event()
        """Set once the supervisor read the exit code of a crash (it then schedules a restart)."""

    def start(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            self.code = 1
            raise RuntimeError("cannot start")
        self.running = True
        self.code = None

    def crash(self, code: int = -9) -> None:
        self.running = False
        self.code = code

    def alive(self) -> bool:
        return self.running

    @property
    def pid(self) -> int:
        return 1000 + self.starts

    @property
    def returncode(self) -> int | None:
        if self.code is not None:
            self.exit_seen.set()
        return self.code

    def stop(self, timeout: float) -> bool:
        self.running = False
        return True

    def log_tail(self, lines: int) -> str:
        return f"last words of {self.name}"


def fast(max_restarts: int = 5) -> RestartPolicy:
    return RestartPolicy(max_restarts=max_restarts, window=60, initial=0.0, maximum=0.0)


async def test_a_dead_child_is_restarted_and_reported() -> None:
    worker, api = FakeChild("worker"), FakeChild("api")
    worker.start()
    api.start()
    reported: list[Restart] = []

    async def report(restart: Restart) -> None:
        reported.append(restart)

    supervisor = Supervisor([worker, api], fast, report, poll_interval=0.01, wake_on_exit=False)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    worker.crash(-9)
    await until(lambda: reported)
    assert reported == [Restart("worker", -9, 1, 0.0, 1002)]
    assert worker.alive() and api.starts == 1
    assert supervisor.restarts("worker") == 1
    stop.set()
    assert await running is None


async def test_a_crash_loop_ends_supervision_naming_the_service() -> None:
    culler = FakeChild("culler", fail_starts=100)
    stop = asyncio.Event()

    async def report(restart: Restart) -> None:
        pytest.fail("a start that failed is not a restart")

    supervisor = Supervisor(
        [culler], lambda: fast(max_restarts=3), report, poll_interval=0.01, wake_on_exit=False
    )
    loop = await asyncio.wait_for(supervisor.run(stop), 10)
    assert loop == CrashLoop("culler", 1, 0, "last words of culler")
    assert culler.starts == 3
    assert "culler is crash-looping" in loop.message() and "last words" in loop.message()


async def test_stopping_cancels_a_pending_restart() -> None:
    nats = FakeChild("nats-server")
    nats.start()

    async def report(restart: Restart) -> None:
        pytest.fail("no restart after stop")

    slow = RestartPolicy(initial=30.0, maximum=30.0)
    supervisor = Supervisor([nats], lambda: slow, report, poll_interval=0.01, wake_on_exit=False)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    nats.crash()
    await asyncio.wait_for(nats.exit_seen.wait(), 5)  # the restart is pending now
    stop.set()
    assert await asyncio.wait_for(running, 5) is None
    assert nats.starts == 1
