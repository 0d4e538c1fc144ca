"""What a start failing half-way must leave behind: nothing. A nats-server with its
monitoring port (to count the connections still open), and a check over this process's
tasks and children."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernelbus import natsserver
from kernelbus.testing import reaper
from kernelbus.testing.waiting import until


@dataclass
class MonitoredNats:
    url: str
    monitor_port: int

    def connections(self) -> int:
        """Client connections open on the server now (`/connz`)."""
        address = f"http://127.0.0.1:{self.monitor_port}/connz"
        with urllib.request.urlopen(address, timeout=5) as response:
            return int(json.load(response)["num_connections"])


def monitored_nats(store_dir: Path, jetstream: bool = True) -> Iterator[MonitoredNats]:
    """A nats-server of the test's own, with or without JetStream; stopped by its pid."""
    monitor = natsserver.free_port()
    server = natsserver.start(
        store_dir, extra_config=f"http: 127.0.0.1:{monitor}", jetstream=jetstream
    )
    try:
        yield MonitoredNats(server.url, monitor)
    finally:
        server.stop()


@dataclass
class Census:
    """The tasks and child processes alive before a start; `nothing_left` compares after."""

    tasks: set[asyncio.Task[object]]
    children: set[int]

    @classmethod
    def take(cls) -> Census:
        return cls(set(asyncio.all_tasks()), reaper.children())

    async def nothing_left(self, nats: MonitoredNats) -> None:
        await until(lambda: nats.connections() == 0, what="no NATS connection left open")
        await until(lambda: not self.new_tasks(), what="no task left running")
        assert reaper.children() - self.children == set()

    def new_tasks(self) -> set[asyncio.Task[object]]:
        current = asyncio.current_task()
        return {t for t in asyncio.all_tasks() - self.tasks if t is not current and not t.done()}


def run_alone(scenario: Coroutine[Any, Any, None]) -> None:
    """Run `scenario` on an event loop of its own, in a thread, so that a census counts only
    the tasks of the service under test: pytest's loop is shared by the whole session, and
    clients other tests left behind (a reconnecting NATS client) start tasks of their own."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(scenario)
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=target, name="startup-scenario")
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


def open_files_under(directory: Path) -> list[str]:
    """Files under `directory` this process holds open (its `/proc/self/fd` links)."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            held.append(target)
    return held
