"""Scale: 1k, 3k and 10k simulated kernels over 10 workers sharing one nats-server.

Starts a private nats-server, W workers (each hosting its kernels in one simulated-kernel host,
`kernelbus_worker.sim`, kernelspec written to a temporary JUPYTER_PATH) and one api, then
fills the registry level by level and measures at each level: start throughput, `GET
/api/kernels` and `GET /api/kernels/{id}` latency, websocket attach (connect to
kernel_info_reply), one cull pass (the culler's own `Culler.tick`, in this process, with a
policy that culls nothing), the N+1 direct registry listing it replaced, RSS of the api and the
workers (+ their hosts), and NATS storage. Every process started here is stopped (and any
leftover killed) before exit.

Usage: `python bench/scale.py [--levels 1000,3000,10000] [--workers 10] [--concurrency 32]`.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
from websockets.asyncio.client import connect

from kernelbus import natsserver, subjects
from kernelbus.registry import Registry
from kernelbus.testing import reaper
from kernelbus.testing.plugin import ApiProcess, Services
from kernelbus_culler.culling import Culler
from kernelbus_culler.leases import Leases
from kernelbus_culler.settings import CullerSettings
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec


def pcts(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 2)

    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    return rss_kb(pid) + sum(rss_kb(child) for child in reaper.descendants(pid))


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.stdout else 0


class NoEmit:
    async def emit(self, schema_id: str, data: dict[str, Any]) -> None:
        return None


async def start_kernels(http: httpx.AsyncClient, count: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    failures: list[str] = []
    queue = iter(range(count))

    async def one_by_one() -> None:
        for _ in queue:
            response = await http.post("/api/kernels", json={"name": SPEC_NAME})
            if response.status_code == 201:
                ids.append(response.json()["id"])
            else:
                failures.append(f"{response.status_code} {response.text[:200]}")

    await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
    if failures:
        print(f"{len(failures)} starts failed, first: {failures[0]}", file=sys.stderr)
    return ids


async def timed_get(http: httpx.AsyncClient, path: str) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = await http.get(path)
    return (time.perf_counter() - start) * 1000, response


async def attach(api: ApiProcess, kernel_id: str) -> float:
    url = f"{api.ws_url}/api/kernels/{kernel_id}/channels"
    start = time.perf_counter()
    async with connect(url, additional_headers=api.headers, open_timeout=60) as ws:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "kernel_info_request",
            "username": "bench",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "2026-01-01T00:00:00Z",
        }
        request = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
        await ws.send(json.dumps({**request, "channel": "shell", "buffers": []}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if (
                msg["header"]["msg_type"] == "kernel_info_reply"
                and msg["parent_header"].get("msg_id") == msg_id
            ):
                return (time.perf_counter() - start) * 1000


async def measure_level(
    level: int,
    api: ApiProcess,
    http: httpx.AsyncClient,
    ids: list[str],
    culler: Culler,
    direct: Registry,
    samples: int,
) -> dict[str, Any]:
    listed: list[float] = []
    for _ in range(samples):
        ms, response = await timed_get(http, "/api/kernels")
        assert response.status_code == 200, response.text
        listed.append(ms)
    count = len(response.json())
    one: list[float] = []
    for kernel_id in random.sample(ids, min(len(ids), samples * 2)):
        ms, response = await timed_get(http, f"/api/kernels/{kernel_id}")
        assert response.status_code == 200, response.text
        one.append(ms)
    attaches = [await attach(api, k) for k in random.sample(ids, min(len(ids), 20))]
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        culled = await culler.tick()
        passes.append((time.perf_counter() - start) * 1000)
        assert culled == 0
    start = time.perf_counter()
    direct_count = len(await direct.list_kernels())
    direct_ms = (time.perf_counter() - start) * 1000
    return {
        "kernels_listed": count,
        "get_kernels_ms": pcts(listed),
        "get_kernel_ms": pcts(one),
        "ws_attach_ms": pcts(attaches),
        "cull_pass_ms": pcts(passes),
        "cull_view_size": len(culler.view.records),
        "direct_n_plus_1_list_ms": round(direct_ms, 1),
        "direct_n_plus_1_count": direct_count,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1000,3000,10000")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    reaper.become_subreaper()
    before = reaper.children()
    root = Path(tempfile.mkdtemp(prefix="kernelbus-bench-scale-"))
    server = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, server.url)
    nc = None
    culler_registry: Registry | None = None
    results: dict[str, Any] = {"workers": args.workers, "levels": {}}
    try:
        write_kernelspec(root / "jupyter")
        per_worker = min(10_000, math.ceil(max(levels) / args.workers) + 50)
        workers = [
            services.worker(
                {
                    "JUPYTER_PATH": str(root / "jupyter"),
                    "KERNELBUS_WORKER_MAX_KERNELS": str(per_worker),
                    "KERNELBUS_WORKER_RUNTIME_DIR": str(root / f"runtime-{i}"),
                    "KERNELBUS_WORKER_SHUTDOWN_KERNELS_ON_EXIT": "false",
                }
            )
            for i in range(args.workers)
        ]
        api = services.api(env={"KERNELBUS_LIMIT_RATE": "false"}, token="bench-token")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        direct = await Registry.open(js)
        culler_registry = await Registry.open(js)
        await culler_registry.start_view(nc)
        settings = CullerSettings(nats_url=server.url, cull_idle_timeout=86_400)
        leases = Leases(await js.key_value(subjects.CULL_BUCKET), "bench-culler")
        culler = Culler(settings, nc, culler_registry, leases, NoEmit())

        limits = httpx.Limits(max_connections=args.concurrency + 4)
        async with httpx.AsyncClient(
            base_url=api.url, headers=api.headers, timeout=120, limits=limits
        ) as http:
            ids = await start_kernels(http, 10, 4)  # warm-up
            await asyncio.sleep(2)
            api_base = rss_kb(api.service.pid)
            worker_base = sum(tree_rss_kb(w.pid) for w in workers)
            store_base = du_bytes(root / "nats")
            results["baseline"] = {
                "kernels": len(ids),
                "api_rss_kb": api_base,
                "workers_rss_kb": worker_base,
                "nats_store_bytes": store_base,
            }
            for level in levels:
                todo = level - len(ids)
                start = time.perf_counter()
                new = await start_kernels(http, todo, args.concurrency)
                seconds = time.perf_counter() - start
                ids.extend(new)
                level_result: dict[str, Any] = {
                    "kernels": len(ids),
                    "started": len(new),
                    "start_seconds": round(seconds, 1),
                    "starts_per_s": round(len(new) / seconds, 1),
                }
                level_result |= await measure_level(
                    level, api, http, ids, culler, direct, args.samples
                )
                api_rss = rss_kb(api.service.pid)
                workers_rss = sum(tree_rss_kb(w.pid) for w in workers)
                grown = max(1, len(ids) - 10)
                level_result |= {
                    "api_rss_kb": api_rss,
                    "api_rss_growth_bytes_per_kernel": round((api_rss - api_base) * 1024 / grown),
                    "workers_rss_kb": workers_rss,
                    "workers_rss_kb_per_1000": round((workers_rss - worker_base) * 1000 / grown),
                    "worker_processes_rss_kb": sum(rss_kb(w.pid) for w in workers),
                    "sim_hosts_rss_kb": workers_rss - sum(rss_kb(w.pid) for w in workers),
                    "culler_bench_rss_kb": rss_kb(os.getpid()),
                    "nats_store_bytes": du_bytes(root / "nats"),
                    "nats_rss_kb": rss_kb(server.process.pid),
                }
                results["levels"][str(level)] = level_result
                print(json.dumps({str(level): level_result}), file=sys.stderr, flush=True)
    finally:
        if culler_registry is not None:
            await culler_registry.close_view()
        if nc is not None:
            await nc.close()
        services.stop_all()
        server.stop()
        leftovers = reaper.kill_new_children(before)
        results["leftover_processes_killed"] = len(leftovers)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
