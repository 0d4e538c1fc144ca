"""`kernelbus run` keeps its processes running: a killed worker comes back with its id and
re-adopts its kernel (same process, state intact), the restart is counted at the launcher's
/metrics and stored as a `service_restarted` event; a crash loop stops everything, naming the
service and showing its last log lines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernelbus import events
from kernelbus.processes import pid_running, wait_for
from kernelbus.testing.chaos import KernelClient, sink_events
from kernelbus.testing.embedded import EmbeddedRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRun]:
    run = EmbeddedRun(tmp_path)
    try:
        yield run
    finally:
        run.kill()


async def test_a_killed_worker_comes_back_and_readopts_its_kernel(embedded: EmbeddedRun) -> None:
    embedded.start()
    async with httpx.AsyncClient(base_url=embedded.url, headers=embedded.headers) as http:
        created = await http.post("/api/kernels", json={"name": "python3"}, timeout=60)
        assert created.status_code == 201, created.text
        kernel_id = created.json()["id"]
    client = KernelClient(embedded.ws_url, kernel_id, embedded.headers)
    await client.connect(30)
    assert await client.run_text("x = 41\nprint(x)") == "41\n"
    # The kernel's own pid (other ipykernel processes are the warm pool's, which a successor
    # stops: nobody owns them).
    kernel_pid = int(await client.run_text("import os\nprint(os.getpid())"))
    assert kernel_pid in embedded.pids_of("ipykernel")
    worker = embedded.pid_of("kernelbus-worker")
    os.kill(worker, signal.SIGKILL)

    def readopted() -> bool:
        new = [p for p in embedded.pids_of("kernelbus-worker") if p != worker]
        return bool(new) and "re-adopted kernel" in _newest_log(embedded, "kernelbus-worker")

    await asyncio.to_thread(wait_for, readopted, 60, "the restarted worker to re-adopt")
    assert await client.run_text("print(x)", reconnect_within=60) == "41\n"
    assert pid_running(kernel_pid)  # the same kernel process
    await client.close()
    assert embedded.restarts("kernelbus-worker") == 1
    assert embedded.restarts("kernelbus-api") == 0

    async def restart_event() -> list[dict[str, object]]:
        stored = await sink_events(embedded, events.SERVICE_RESTARTED)
        return [e["event"] for e in stored]  # type: ignore[misc]

    deadline = asyncio.get_running_loop().time() + 30
    while not (stored := await restart_event()):
        assert asyncio.get_running_loop().time() < deadline, "no service_restarted event stored"
        await asyncio.sleep(0.2)
    assert len(stored) == 1
    assert stored[0]["service"] == "kernelbus-worker" and stored[0]["exit_code"] == -9
    assert stored[0]["restarts"] == 1


def _newest_log(run: EmbeddedRun, service: str) -> str:
    logs = sorted((run.data_dir / "logs").glob(f"{service}-*.log"))
    return logs[-1].read_text(errors="replace") if logs else ""


def test_a_crash_loop_stops_everything_and_names_the_service(embedded: EmbeddedRun) -> None:
    embedded.extra_env.update(
        {
            "KERNELBUS_CULLER_CULL_INTERVAL": "not-a-number",  # the culler refuses to start
            "KERNELBUS_LAUNCHER_MAX_RESTARTS": "2",
        }
    )
    embedded.start(wait=False)
    assert embedded.process is not None
    while embedded.process.poll() is None:  # note every process it starts, for the census
        embedded.census()
        time.sleep(0.05)
    assert embedded.process.returncode == 1
    output = embedded.output()
    assert "kernelbus-culler is crash-looping" in output, output
    assert "after 2 restarts" in output
    assert "invalid settings" in output and "KERNELBUS_CULLER_CULL_INTERVAL" in output  # last lines
    assert "Kernelbus stopped." in output
    assert embedded.wait_all_gone(10) == []
