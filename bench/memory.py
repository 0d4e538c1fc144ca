"""Memory of the worker, its iopub keeper and the api while kernels with large outputs come and
go (ADR 0025): `kernelbus run`, then N times: a kernel (warm pool), three `display_data` of
SIZE bytes over a v1 websocket, DELETE, a pause; the resident set size of each process after
each round. A process that gives the memory of deleted kernels back stays flat.

    .venv/bin/python bench/memory.py [--rounds 16] [--size 20000000] [--env KEY=VALUE ...]

Prints one JSON object: rss_mib[role] = [after round 1, after round 2, ...].
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
import perf  # (the same Kernelbus launch and websocket client as the perf bench)

ROLES = ("worker", "keeper", "api")


def rss_mib(pids: dict[str, list[int]]) -> dict[str, int]:
    found = {}
    for role in ROLES:
        total = 0
        for pid in pids.get(role, []):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += psutil.Process(pid).memory_info().rss
        found[role] = total >> 20
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--pause", type=float, default=6.0, help="s after each DELETE")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for Kernelbus")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kernelbus-memory-"))
    extra = dict(item.split("=", 1) for item in args.env)
    series: dict[str, list[int]] = {role: [] for role in ROLES}
    async with perf.kernelbus(root, extra) as gw, gw.http() as http:
        code = perf.display_code(args.size)
        for _ in range(args.rounds):
            kernel_id, _ = await gw.ready_kernel(http)
            async with gw.socket(kernel_id, v1=True) as client:
                for _ in range(3):
                    perf.check_display(await client.execute(code), args.size)
            (await http.delete(f"/api/kernels/{kernel_id}")).raise_for_status()
            await asyncio.sleep(args.pause)  # the worker's release runs every heartbeat
            for role, mib in rss_mib(gw.cpu_pids()).items():
                series[role].append(mib)
            print(series, file=sys.stderr, flush=True)
    print(json.dumps({"rounds": args.rounds, "size": args.size, "rss_mib": series}))


if __name__ == "__main__":
    asyncio.run(main())
