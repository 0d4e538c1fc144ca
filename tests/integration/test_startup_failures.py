"""A service whose start fails half-way exits with a clear error and leaves nothing running:
no open NATS connection, no task, no child process, no registry entry (issue 10).

Each service is started in-process against a nats-server of the test's own, so its
connections can be counted (`/connz`), and made to fail after it has connected: a port that
is already taken (worker metrics, culler health), or a NATS without JetStream (api, events).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from startup_support import Census, MonitoredNats, monitored_nats, open_files_under, run_alone

from kernelbus import bus
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings
from kernelbus.startup import StartFailed
from kernelbus_api.app import create_app
from kernelbus_api.settings import ApiSettings
from kernelbus_culler import service as culler_service
from kernelbus_culler.settings import CullerSettings
from kernelbus_events.app import create_app as create_events_app
from kernelbus_events.settings import EventsSettings
from kernelbus_worker.settings import WorkerSettings
from kernelbus_worker.worker import run_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[MonitoredNats]:
    yield from monitored_nats(tmp_path / "nats")


@pytest.fixture
def nats_without_jetstream(tmp_path: Path) -> Iterator[MonitoredNats]:
    yield from monitored_nats(tmp_path / "nats", jetstream=False)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test's duration."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def test_worker_start_failing_half_way_leaves_nothing(
    nats: MonitoredNats, taken_port: int, tmp_path: Path
) -> None:
    async def scenario() -> None:
        settings = WorkerSettings(
            nats_url=nats.url, id="half-way", metrics_port=taken_port, runtime_dir=str(tmp_path)
        )
        census = Census.take()
        with pytest.raises(StartFailed, match="kernel-worker could not start: OSError") as failed:
            await run_worker(settings, stop=asyncio.Event())
        assert str(taken_port) in str(failed.value)  # the port it could not bind
        await census.nothing_left(nats)
        nc = await bus.connect(BusSettings(nats_url=nats.url), name="test")
        try:
            registry = await Registry.open(nc.jetstream())
            assert "half-way" not in {w.worker_id for w in await registry.live_workers()}
        finally:
            await bus.close(nc)

    run_alone(scenario())


@pytest.mark.parametrize(
    ("module", "port_variable", "line"),
    [
        ("kernelbus_worker", "KERNELBUS_WORKER_METRICS_PORT", "kernelbus-worker: kernel-worker"),
        ("kernelbus_culler", "KERNELBUS_CULLER_HEALTH_PORT", "kernelbus-culler: culler"),
    ],
)
def test_entry_point_says_why_it_did_not_start(
    nats: MonitoredNats, taken_port: int, tmp_path: Path, module: str, port_variable: str, line: str
) -> None:
    env = {
        **os.environ,
        "KERNELBUS_NATS_URL": nats.url,
        port_variable: str(taken_port),
        "KERNELBUS_WORKER_RUNTIME_DIR": str(tmp_path),
    }
    done = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"{line} could not start: OSError"), last


def test_culler_start_failing_half_way_leaves_nothing(nats: MonitoredNats, taken_port: int) -> None:
    async def scenario() -> None:
        settings = CullerSettings(nats_url=nats.url, health_port=taken_port)
        census = Census.take()
        with pytest.raises(StartFailed, match="culler could not start: OSError") as failed:
            await culler_service.run(settings, asyncio.Event())
        assert str(taken_port) in str(failed.value)
        await census.nothing_left(nats)

    run_alone(scenario())


def test_api_start_failing_half_way_leaves_nothing(
    nats_without_jetstream: MonitoredNats,
) -> None:
    async def scenario() -> None:
        app = create_app(ApiSettings(nats_url=nats_without_jetstream.url))
        census = Census.take()
        with pytest.raises(StartFailed, match=r"api could not start: .*JetStream") as failed:
            async with app.router.lifespan_context(app):
                pytest.fail("the api started without JetStream")
        print(failed.value)
        await census.nothing_left(nats_without_jetstream)

    run_alone(scenario())


def test_events_start_failing_half_way_leaves_nothing(
    nats_without_jetstream: MonitoredNats, tmp_path: Path
) -> None:
    async def scenario() -> None:
        data = tmp_path / "events"
        data.mkdir()
        settings = EventsSettings(nats_url=nats_without_jetstream.url, db_path=data / "events.db")
        app = create_events_app(settings)
        census = Census.take()
        with pytest.raises(StartFailed, match=r"events could not start: .*JetStream"):
            async with app.router.lifespan_context(app):
                pytest.fail("the events service started without JetStream")
        await census.nothing_left(nats_without_jetstream)
        assert (data / "events.db").exists()  # the store was opened before the failure ...
        assert open_files_under(data) == []  # ... and closed after it

    run_alone(scenario())
