"""Recovery after kill -9 of each process of `kernelbus run`, measured from outside while a
cell prints a counter every 0.1 s (the chaos suite's phases: tests/e2e/test_chaos.py).

    .venv/bin/python bench/chaos.py            # 120 counter values per phase
    .venv/bin/python bench/chaos.py -n 200 kernelbus-worker

Per killed process: seconds until REST (`GET /api/kernels/<id>`) answers again, until the
replacement process is ready, until the client receives kernel output again; counter values
received (of n), duplicates, and what `print(x)` printed in the same kernel afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx

from kernelbus.testing.chaos import KernelClient, Phase, chaos_phase
from kernelbus.testing.embedded import EmbeddedRun

TARGETS = (
    "kernelbus-api",
    "kernelbus-worker",
    "kernelbus-culler",
    "kernelbus-events",
    "nats-server",
)


def row(phase: Phase, count: int) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    missing = len(set(range(count)) - set(phase.values))
    return (
        f"| {phase.target} | {s(phase.rest)} | {s(phase.ready)} | {s(phase.output)} | "
        f"{count - missing}/{count} | {phase.duplicates} | {phase.state.strip() or '-'} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=120, help="counter values per phase")
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    args = parser.parse_args()
    run = EmbeddedRun(Path(tempfile.mkdtemp(prefix="kernelbus-chaos-bench-")))
    try:
        await asyncio.to_thread(run.start)
        async with httpx.AsyncClient(base_url=run.url, headers=run.headers, timeout=60) as http:
            kernel_id = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
        client = KernelClient(run.ws_url, kernel_id, run.headers)
        await client.connect(30)
        await client.run_text("x = 41")
        print("| killed | REST back (s) | replaced (s) | output back (s) | values | dup | x |")
        print("|---|---|---|---|---|---|---|")
        for target in args.targets:
            try:
                print(row(await chaos_phase(run, client, target, args.n), args.n), flush=True)
            except Exception as exc:
                print(f"| {target} | failed: {type(exc).__name__} {exc} | | | | | |", flush=True)
    finally:
        run.kill()


if __name__ == "__main__":
    asyncio.run(main())
