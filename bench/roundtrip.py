"""Execute `1+1` round trip (request sent -> execute_reply and status idle received), warm.

Kernelbus over HTTP + a v1 websocket, against a direct jupyter_client ZMQ connection to a
kernel started here, in the same run. Usage: `python bench/roundtrip.py [-n 200] [--url U
--token T]` (without --url it starts nats + worker + api itself).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from stack import (
    arguments,
    direct_kernel,
    kernel_socket,
    kernelbus,
    percentiles,
    run,
    ws_execute,
    zmq_execute,
)

WARMUP = 20


async def timed(n: int, once: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(WARMUP):
        await once()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await once()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def main() -> None:
    args = arguments(__doc__ or "")
    async with kernelbus(args, env={}) as target, kernel_socket(target) as ws:
        via_kernelbus = await timed(args.n, lambda: ws_execute(ws, "1+1"))
    async with direct_kernel() as kc:
        direct = await timed(args.n, lambda: zmq_execute(kc, "1+1"))
    kb, zmq = percentiles(via_kernelbus), percentiles(direct)
    result = {
        "n": args.n,
        "kernelbus_ms": kb,
        "direct_zmq_ms": zmq,
        "p50_ratio": kb["p50"] / zmq["p50"],
        "p95_ratio": kb["p95"] / zmq["p95"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    run(main())
