"""The session-wide `stack` is alone on a nats-server of its own, and the plugin's reapers
stop what tests and module fixtures leave behind without touching the stack."""

from __future__ import annotations

import httpx
import pytest

from kernelbus import bus
from kernelbus.registry import Registry
from kernelbus.settings import BusSettings
from kernelbus.testing.plugin import Services, Stack

pytestmark = pytest.mark.integration

pytest_plugins = ["pytester"]


async def live_worker_ids(nats_url: str) -> set[str]:
    nc = await bus.connect(BusSettings(nats_url=nats_url), name="stack-isolation-test")
    try:
        registry = await Registry.open(nc.jetstream())
        return {heartbeat.worker_id for heartbeat in await registry.live_workers()}
    finally:
        await nc.drain()


async def test_a_worker_of_another_test_is_not_on_the_stacks_bus(
    stack: Stack, services: Services, nats_url: str
) -> None:
    other = services.worker()
    stack_worker_id = stack.worker.env["KERNELBUS_WORKER_ID"]
    assert stack.nats_url != nats_url
    assert await live_worker_ids(stack.nats_url) == {stack_worker_id}
    session_workers = await live_worker_ids(nats_url)
    assert other.env["KERNELBUS_WORKER_ID"] in session_workers
    assert stack_worker_id not in session_workers


async def test_an_api_of_stack_services_places_kernels_on_the_stacks_worker(
    stack: Stack, stack_services: Services
) -> None:
    api = stack_services.api()
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        started = await http.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        try:
            nc = await bus.connect(BusSettings(nats_url=stack.nats_url), name="stack-isolation")
            try:
                record = await (await Registry.open(nc.jetstream())).get_kernel(kernel_id)
            finally:
                await nc.drain()
            assert record is not None
            assert record.worker_id == stack.worker.env["KERNELBUS_WORKER_ID"]
        finally:
            assert (await http.delete(f"/api/kernels/{kernel_id}")).status_code == 204


LEAKY_MODULE = """
import subprocess
from pathlib import Path

import pytest

from kernelbus.processes import pid_running


@pytest.fixture(scope="module")
def leaky():
    process = subprocess.Popen(["sleep", "600"])
    Path(PID_FILE).write_text(str(process.pid))
    yield process.pid  # never stopped: the plugin's module reaper must


def test_leaks_from_a_module_fixture(leaky):
    pass


def test_leaks_a_process():
    Path(TEST_PID_FILE).write_text(str(subprocess.Popen(["sleep", "600"]).pid))


def test_the_tests_leftover_is_gone_the_module_fixtures_not_yet(leaky):
    assert not pid_running(int(Path(TEST_PID_FILE).read_text()))
    assert pid_running(leaky)


def test_starts_the_session_fixtures(stack, nats_url):
    pass  # after the module's reaper took its snapshot: they are new children at module end
"""

NEXT_MODULE = """
from pathlib import Path

import httpx
import nats

from kernelbus.processes import pid_running


def test_the_leak_is_gone():
    pid = int(Path(PID_FILE).read_text())
    assert not pid_running(pid)


async def test_the_session_fixtures_live_on(stack, nats_url):
    async with httpx.AsyncClient(headers=stack.api.headers) as http:
        assert (await http.get(f"{stack.api.url}/api/kernels")).status_code == 200
    assert stack.worker.alive()
    nc = await nats.connect(nats_url)
    await nc.close()
"""


def test_a_module_fixtures_leftover_is_killed_at_module_end_the_stack_lives_on(
    pytester: pytest.Pytester,
) -> None:
    """In file order: a test's leftover dies after that test, a module fixture's after its
    module; the session fixtures, first started by the module's last test, live on."""
    pid_file = repr(str(pytester.path / "leaked.pid"))
    test_pid_file = repr(str(pytester.path / "test-leaked.pid"))
    pytester.makepyfile(
        test_a_leaky=LEAKY_MODULE.replace("TEST_PID_FILE", test_pid_file).replace(
            "PID_FILE", pid_file
        ),
        test_b_next=NEXT_MODULE.replace("PID_FILE", pid_file),
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "kernelbus.testing.plugin",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=session",
        "-o",
        "asyncio_default_test_loop_scope=session",
        "-q",
    )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        ["processes left by module fixtures (killed at module end):", "*test_a_leaky.py*sleep 600*"]
    )
