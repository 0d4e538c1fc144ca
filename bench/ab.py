"""Two `kernelbus run` stacks side by side: `1+1` round trips in alternating blocks, so that
both see the same machine, and the CPU of each process per round trip.

Each side is a set of environment variables (`--a`, `--b`: "K=V K=V") and optionally another
checkout to run from (`--a-tree`, `--b-tree`: its libs and services go first on PYTHONPATH),
e.g. the base of a change against the change:

    git worktree add /tmp/base main
    .venv/bin/python bench/ab.py --a-tree /tmp/base --blocks 40

With `--clients N` each side has N kernels, one websocket each, and a block is N clients
running `--block` round trips each at once (the 20-client load of `bench/perf.py`).

With `--big BYTES` each execute displays a `display_data` of that many bytes (as
`bench/perf.py`'s large-message figures) instead of `1+1`; the timings are of those.

Prints one line per side: p50, p95 (ms), CPU (ms per round trip) summed and per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import perf  # (the same Kernelbus launch and websocket client as the perf bench)

WARMUP = 50


def side_env(assignments: str, tree: str | None) -> dict[str, str]:
    env = dict(kv.split("=", 1) for kv in assignments.split() if kv)
    if tree:
        root = Path(tree).resolve()
        paths = sorted(root.glob("libs/*/src")) + sorted(root.glob("services/*/src"))
        env["PYTHONPATH"] = ":".join(str(p) for p in paths)
    return env


async def start_side(
    stack: contextlib.AsyncExitStack, env: dict[str, str], clients: int = 1
) -> tuple[list[perf.WsClient], dict[str, list[int]]]:
    """`kernelbus run` with `env`, `clients` kernels with a v1 websocket each, warmed up with
    `WARMUP` round trips, and the stack's pids; all of it stops when `stack` closes."""
    root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    gw = await stack.enter_async_context(perf.kernelbus(root, env))
    http = await stack.enter_async_context(gw.http())
    sockets = []
    for _ in range(clients):
        kernel_id, _ = await gw.ready_kernel(http)
        sockets.append(await stack.enter_async_context(gw.socket(kernel_id, v1=True)))
    for client in sockets:
        for _ in range(WARMUP):
            await client.execute("1+1")
    return sockets, gw.cpu_pids()


async def timed_round_trips(client: perf.WsClient, count: int, big: int = 0) -> list[float]:
    """`count` executes of `1+1` (or, with `big`, of a display of `big` bytes), in ms."""
    code = perf.display_code(big) if big else "1+1"
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        seen = await client.execute(code)
        samples.append((time.perf_counter() - began) * 1000)
        if big:
            perf.check_display(seen, big)
    return samples


async def measure(
    envs: dict[str, dict[str, str]], blocks: int, block: int, clients: int = 1, big: int = 0
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        sides: dict[str, dict[str, Any]] = {}
        for name, env in envs.items():
            sockets, pids = await start_side(stack, env, clients)
            sides[name] = {"clients": sockets, "pids": pids, "ms": [], "cpu": {}}
            if big:  # the first display warms the kernel's string cache
                await asyncio.gather(*(timed_round_trips(c, 1, big) for c in sockets))
        names = list(sides)
        for index in range(blocks):
            for name in names if index % 2 == 0 else reversed(names):
                side = sides[name]
                before = perf.cpu_seconds(side["pids"])
                runs = [timed_round_trips(client, block, big) for client in side["clients"]]
                for samples in await asyncio.gather(*runs):
                    side["ms"] += samples
                after = perf.cpu_seconds(side["pids"])
                for role, seconds in after.items():
                    used = seconds - before.get(role, 0.0)
                    side["cpu"][role] = side["cpu"].get(role, 0.0) + used
        result: dict[str, Any] = {}
        for name, side in sides.items():
            samples = sorted(side["ms"])
            count = len(samples)
            cpu = {role: round(s * 1000 / count, 3) for role, s in side["cpu"].items()}
            result[name] = {
                "env": envs[name],
                "clients": clients,
                "display_bytes": big,
                "roundtrips": count,
                "p50_ms": round(statistics.median(samples), 3),
                "p95_ms": round(samples[int(count * 0.95)], 3),
                "cpu_ms_per_roundtrip": round(sum(cpu.values()), 3),
                "cpu_by_process": cpu,
            }
        return result


def side_parser(description: str | None) -> argparse.ArgumentParser:
    """The options naming the two sides (and `--json`), for this bench and its siblings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--a", default="", help='side A\'s environment, "K=V K=V"')
    parser.add_argument("--b", default="", help="side B's environment")
    parser.add_argument("--a-tree", help="a checkout side A runs from")
    parser.add_argument("--b-tree", help="a checkout side B runs from")
    parser.add_argument("--json", type=Path, help="also write the result here")
    return parser


def side_envs(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    return {"A": side_env(args.a, args.a_tree), "B": side_env(args.b, args.b_tree)}


def main() -> None:
    parser = side_parser(__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--block", type=int, default=100, help="round trips per block (and client)")
    parser.add_argument("--clients", type=int, default=1, help="kernels, each with a client")
    parser.add_argument("--big", type=int, default=0, help="display this many bytes per execute")
    args = parser.parse_args()
    envs = side_envs(args)
    result = asyncio.run(measure(envs, args.blocks, args.block, args.clients, args.big))
    for name, side in result.items():
        print(
            name,
            f"p50 {side['p50_ms']} ms, p95 {side['p95_ms']} ms,",
            f"CPU {side['cpu_ms_per_roundtrip']} ms per round trip:",
            side["cpu_by_process"],
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
