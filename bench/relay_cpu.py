"""Where Kernelbus's CPU per round trip goes beyond an empty relay of its shape: user and
system time of every thread of every process, Kernelbus (`kernelbus run`) against the relay of
`bench/relay_floor.py`, `1+1` round trips on a v1 websocket in alternating blocks.

    .venv/bin/python bench/relay_cpu.py [--blocks 6] [--block 500]     # JSON to stdout

Threads are told apart by name (`/proc/<pid>/task/*/comm`): a service's Python thread, libzmq's
I/O thread `ZMQbg/IO/0`, uvloop's `libuv-worker`. Figures are ms of CPU per round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import relay_floor

TICKS = os.sysconf("SC_CLK_TCK")


def thread_times(pids: dict[str, list[int]]) -> dict[str, tuple[float, float]]:
    """`role/thread name` -> (user, system) seconds, summed over the role's processes."""
    out: dict[str, tuple[float, float]] = {}
    for role, role_pids in pids.items():
        for pid in role_pids:
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{pid}/task"):
                    stat = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1]
                    fields = stat.split()
                    name = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
                    user, system = out.get(f"{role}/{name}", (0.0, 0.0))
                    out[f"{role}/{name}"] = (
                        user + int(fields[11]) / TICKS,
                        system + int(fields[12]) / TICKS,
                    )
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-cpu-")))
        both = await relay_floor.kernelbus_and_relay(stack, root, {})

        sides = {
            "kernelbus": (both.kernelbus.execute, both.gateway.cpu_pids),
            "relay": (both.relay.execute, lambda: both.relay_pids),
        }
        for execute, _ in sides.values():
            for _ in range(50):
                await execute("1+1")
        cpu: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in sides}
        ms: dict[str, list[float]] = {name: [] for name in sides}
        for index in range(args.blocks):
            names = list(sides) if index % 2 == 0 else list(reversed(sides))
            for name in names:
                execute, get_pids = sides[name]
                pids = get_pids()
                before = thread_times(pids)
                for _ in range(args.block):
                    began = time.perf_counter()
                    await execute("1+1")
                    ms[name].append((time.perf_counter() - began) * 1000)
                after = thread_times(pids)
                for key, (user, system) in after.items():
                    user0, system0 = before.get(key, (0.0, 0.0))
                    total_user, total_system = cpu[name].get(key, (0.0, 0.0))
                    cpu[name][key] = (total_user + user - user0, total_system + system - system0)
        count = args.blocks * args.block
        out: dict[str, Any] = {"round_trips": count, "load_average": os.getloadavg()}
        for name in sides:
            threads = {
                key: {"user": round(u * 1000 / count, 3), "system": round(s * 1000 / count, 3)}
                for key, (u, s) in sorted(cpu[name].items())
                if u + s > 0
            }
            total = sum(u + s for u, s in cpu[name].values())
            out[name] = {
                "p50_ms": round(statistics.median(ms[name]), 3),
                "cpu_ms_per_round_trip": round(total * 1000 / count, 3),
                "threads": threads,
            }
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6, help="blocks per side, alternating")
    parser.add_argument("--block", type=int, default=500, help="round trips per block")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
