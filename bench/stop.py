"""Ctrl-C on `kernelbus run` with N kernels running: seconds until the launcher exits and
until no process it started is left (issue 11 item 5: target < 5 s with 10 kernels).

    .venv/bin/python bench/stop.py            # 10 kernels, 3 runs
    .venv/bin/python bench/stop.py -k 10 -r 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from kernelbus.testing.embedded import EmbeddedRun

START = {"name": "python3", "env": {"KERNEL_LAUNCH_TIMEOUT": "120"}}
"""Ten kernels at once on a busy 2-core machine can take longer than the default 40 s."""


async def start_kernels(run: EmbeddedRun, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=run.url, headers=run.headers, timeout=180) as http:
        responses = await asyncio.gather(
            *(http.post("/api/kernels", json=START) for _ in range(count))
        )
    for response in responses:
        response.raise_for_status()
    return [r.json()["id"] for r in responses]


def one_run(kernels: int) -> tuple[float, float, int]:
    run = EmbeddedRun(Path(tempfile.mkdtemp(prefix="kernelbus-stop-bench-")))
    try:
        run.start()
        asyncio.run(start_kernels(run, kernels))
        running = len(run.pids_of("ipykernel"))
        assert run.process is not None
        began = time.monotonic()
        run.interrupt()
        run.process.wait(120)
        exited = time.monotonic() - began
        left = run.wait_all_gone(120)
        gone = time.monotonic() - began
        if left:
            raise SystemExit(f"processes left behind: {left}")
        return exited, gone, running
    finally:
        run.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-k", "--kernels", type=int, default=10)
    parser.add_argument("-r", "--runs", type=int, default=3)
    args = parser.parse_args()
    totals = []
    for i in range(args.runs):
        exited, gone, running = one_run(args.kernels)
        totals.append(gone)
        print(
            f"run {i + 1}: {running} kernel processes; launcher exited after {exited:.2f} s, "
            f"no process left after {gone:.2f} s",
            flush=True,
        )
    print(f"median {statistics.median(totals):.2f} s, max {max(totals):.2f} s")


if __name__ == "__main__":
    main()
