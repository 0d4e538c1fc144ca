"""Kernel start to first reply: `POST /api/kernels` → websocket → `kernel_info_reply`.

Three columns measured in one run: Kernelbus with a cold start (no warm pool), Kernelbus with a
warm pool of one python3 kernel (the `make run` default; the pool is refilled between samples),
and the reference — jupyter_client's own `start_kernel` + `wait_for_ready`, no gateway.
Usage: `python bench/kernel_start.py [-n 10]`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import nats
from jupyter_client.manager import AsyncKernelManager
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).parent))

from stack import Target, arguments, percentiles, run

from kernelbus import natsserver
from kernelbus.registry import Registry
from kernelbus.testing.plugin import Services


@asynccontextmanager
async def stack(pool: str) -> AsyncIterator[tuple[Target, Registry]]:
    root = Path(tempfile.mkdtemp(prefix="kernelbus-bench-start-"))
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, server.url)
    nc = await nats.connect(server.url)
    try:
        services.worker({"KERNELBUS_WORKER_POOL": pool})
        api = services.api(token="bench-token")
        yield Target(api.url, api.token), await Registry.open(nc.jetstream())
    finally:
        await nc.close()
        services.stop_all()
        server.stop()


async def first_reply(target: Target) -> tuple[float, str]:
    """Seconds from the POST to the kernel_info_reply on a fresh websocket, and the kernel id."""
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=60) as http:
        start = time.perf_counter()
        response = await http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        kernel_id = response.json()["id"]
        url = target.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
        async with connect(url, additional_headers=target.headers) as ws:
            msg_id = uuid.uuid4().hex
            header = {
                "msg_id": msg_id,
                "msg_type": "kernel_info_request",
                "session": "b",
                "username": "b",
                "version": "5.3",
                "date": "2026-01-01T00:00:00.000000Z",
            }
            await ws.send(
                json.dumps(
                    {
                        "header": header,
                        "parent_header": {},
                        "metadata": {},
                        "content": {},
                        "channel": "shell",
                    }
                )
            )
            while True:
                msg = json.loads(await ws.recv())
                if (
                    msg["msg_type"] == "kernel_info_reply"
                    and msg["parent_header"]["msg_id"] == msg_id
                ):
                    break
        elapsed = time.perf_counter() - start
        await http.delete(f"/api/kernels/{kernel_id}")
        return elapsed, kernel_id


async def pool_ready(registry: Registry) -> None:
    async with asyncio.timeout(60):
        # The pool lives in another process: its heartbeat in KV is the only signal.
        while not any(w.pooled_kernels.get("python3") for w in await registry.live_workers()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def kernelbus_samples(n: int, pool: str) -> list[float]:
    samples = []
    async with stack(pool) as (target, registry):
        await first_reply(target)  # warm-up: imports, first connections
        for _ in range(n):
            if pool:
                await pool_ready(registry)
            samples.append((await first_reply(target))[0] * 1000)
    return samples


async def direct_samples(n: int) -> list[float]:
    samples = []
    for _ in range(n + 1):
        km = AsyncKernelManager(kernel_name="python3")
        start = time.perf_counter()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        samples.append((time.perf_counter() - start) * 1000)
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return samples[1:]


async def main() -> None:
    args = arguments(__doc__ or "")
    n = min(args.n, 30)
    cold = await kernelbus_samples(n, "")
    warm = await kernelbus_samples(n, "python3=1")
    direct = await direct_samples(n)
    reference = percentiles(direct)
    print(f"N={n} per column; ms")
    columns = (("kernelbus cold", cold), ("kernelbus warm pool", warm), ("direct", direct))
    for name, samples in columns:
        q = percentiles(samples)
        ratio = q["p50"] / reference["p50"]
        print(f"{name:20} p50 {q['p50']:7.1f}  p95 {q['p95']:7.1f}  p50 ratio {ratio:.2f}")


if __name__ == "__main__":
    run(main())
