"""What an idle Kernelbus costs: CPU per second of every process of `kernelbus run` while one
kernel sits with a websocket open and nothing runs, side by side with another checkout (or
other settings) in alternating windows, so that both see the same machine.

    git worktree add /tmp/base main
    .venv/bin/python bench/idle_cpu.py --a-tree /tmp/base [--windows 6] [--window 10]

Prints, per side, ms of CPU per second of wall time by process (psutil's user + system; its
10 ms ticks are ±1 ms/s over a 10 s window, so the figures are sums over all windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import perf
from ab import side_envs, side_parser, start_side

SETTLE = 5.0
"""Seconds after the warm-up before measuring (the activity flush and pool refills end)."""


async def measure(envs: dict[str, dict[str, str]], windows: int, window: float) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        sides: dict[str, dict[str, Any]] = {}
        for name, env in envs.items():
            _, pids = await start_side(stack, env)
            sides[name] = {"pids": pids, "cpu": {}, "seconds": 0.0}
        await asyncio.sleep(SETTLE)
        names = list(sides)
        for index in range(windows):
            for name in names if index % 2 == 0 else reversed(names):
                side = sides[name]
                before, began = perf.cpu_seconds(side["pids"]), time.monotonic()
                await asyncio.sleep(window)
                after, side["seconds"] = (
                    perf.cpu_seconds(side["pids"]),
                    side["seconds"] + (time.monotonic() - began),
                )
                for role, seconds in after.items():
                    side["cpu"][role] = side["cpu"].get(role, 0.0) + seconds - before.get(role, 0)
        result: dict[str, Any] = {}
        for name, side in sides.items():
            per_second = {r: round(s * 1000 / side["seconds"], 2) for r, s in side["cpu"].items()}
            result[name] = {
                "env": envs[name],
                "seconds": round(side["seconds"], 1),
                "cpu_ms_per_second": round(sum(per_second.values()), 2),
                "cpu_by_process": dict(sorted(per_second.items())),
            }
        return result


def main() -> None:
    parser = side_parser(__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    args = parser.parse_args()
    result = asyncio.run(measure(side_envs(args), args.windows, args.window))
    for name, side in result.items():
        print(name, f"CPU {side['cpu_ms_per_second']} ms per s idle:", side["cpu_by_process"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
