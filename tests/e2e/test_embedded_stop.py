"""Stopping `kernelbus run` with 10 kernels running: every service stops on its own (none has to
be killed), every kernel is shut down by its worker, and no process is left behind.

How long it takes is a benchmark (`bench/stop.py`, `bench/RESULTS.md`); the waits here are only
hang guards."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernelbus.testing.embedded import EmbeddedRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KERNELS = 10


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRun]:
    run = EmbeddedRun(tmp_path)
    try:
        run.start()
        yield run
    finally:
        run.kill()


START = {"name": "python3", "env": {"KERNEL_LAUNCH_TIMEOUT": "120"}}
"""Ten kernels at once on a busy 2-core machine can take longer than the default 40 s."""


async def start_kernels(run: EmbeddedRun, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=run.url, headers=run.headers, timeout=180) as http:
        responses = await asyncio.gather(
            *(http.post("/api/kernels", json=START) for _ in range(count))
        )
    failed = [r.text for r in responses if r.status_code != 201]
    assert not failed, failed
    return [str(r.json()["id"]) for r in responses]


def log_of(run: EmbeddedRun, service: str) -> str:
    return "".join(p.read_text() for p in (run.data_dir / "logs").glob(f"{service}-*.log"))


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
async def test_stop_with_ten_kernels_leaves_nothing(embedded: EmbeddedRun, how: str) -> None:
    kernel_ids = await start_kernels(embedded, KERNELS)
    worker = embedded.pid_of("kernelbus-worker")
    kernels = embedded.pids_of("ipykernel")
    assert len(kernels) >= KERNELS  # the ten, plus the warm pool's refill
    assert embedded.process is not None
    if how == "ctrl-c":
        embedded.interrupt()  # SIGINT to the whole foreground process group
    else:
        embedded.census()
        embedded.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(embedded.process.wait, 90) == 0
    output = embedded.output()
    assert "Kernelbus stopped." in output
    assert "killed" not in output, output  # every service exited on its own
    assert embedded.wait_all_gone(10) == []
    assert worker in embedded.seen and all(k in embedded.seen for k in kernels)
    worker_log = log_of(embedded, "kernelbus-worker")
    for kernel_id in kernel_ids:  # gracefully, while NATS was still up
        assert f"kernel shut down (worker stopping) [kernel_id={kernel_id}" in worker_log
    assert "never awaited" not in worker_log  # cleanup_resources() is a coroutine
    assert "Application shutdown complete" in log_of(embedded, "kernelbus-events")
