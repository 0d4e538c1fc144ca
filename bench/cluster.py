"""Node-loss recovery on a local 3-node JetStream cluster, timed over several kills (numbers in
RESULTS.md).

Each run starts a fresh cluster, a worker and an api replica, a simulated kernel with a
websocket open, then SIGKILLs the node leading the kernel registry's stream. The victim is, in
turn, the worker's only node, the api's only node, or neither's (the services learn the other
nodes from the server's INFO and reconnect). From the kill, three clients poll concurrently:

- websocket: an execute every try (1 s reply window) until one answers;
- REST reads: `GET /api/kernels` and `GET /api/kernels/{id}` until both answer 200;
- REST writes: `POST /api/kernels` until one answers 201 (since ADR 0023 it no longer waits
  for the new stream leader: the worker's registry write is bounded and kept pending);
- leader: the kernel registry's stream, asked from a surviving node, until it names a leader
  again (nats-server's election: what REST writes waited for before ADR 0023).

Usage: `python bench/cluster.py [--runs 6]`. Prints one line per run and median / p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import nats
from websockets.asyncio.client import ClientConnection, connect

from kernelbus import bus, subjects
from kernelbus.natscluster import start_cluster
from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

ROLES = ("worker", "api", "neither")


def _execute(code: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "bench",
        "session": "",
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }
    msg = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell"}
    return msg_id, json.dumps({**msg, "content": {"code": code}, "buffers": []})


async def _answered(ws: ClientConnection, window: float) -> bool:
    msg_id, frame = _execute("6 * 7")
    await ws.send(frame)
    end = time.monotonic() + window
    while (left := end - time.monotonic()) > 0:
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            return False
        if (
            reply["parent_header"].get("msg_id") == msg_id
            and reply["header"]["msg_type"] == "execute_result"
        ):
            return True
    return False


async def one_run(root: Path, victim: str) -> dict[str, float]:
    cluster = start_cluster(root / "cluster", 3)
    services = Services(root, cluster.urls)
    try:
        nc = await nats.connect(servers=cluster.urls.split(","))
        try:
            js = nc.jetstream()
            while True:
                try:
                    await bus.ensure_infrastructure(js)
                    info = await js.stream_info(f"KV_{subjects.KERNELS_BUCKET}")
                    if info.cluster is not None and info.cluster.leader:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.2)
        finally:
            await nc.close()
        leader = int(info.cluster.leader.rsplit("-", 1)[1])
        other = (leader + 1) % 3
        spare = (leader + 2) % 3
        url_of = {
            "worker": leader if victim == "worker" else other,
            "api": leader if victim == "api" else (spare if victim == "neither" else other),
        }
        write_kernelspec(root / "jupyter")
        services.worker(
            env={"JUPYTER_PATH": str(root / "jupyter")},
            nats_url=cluster.nodes[url_of["worker"]].url,
        )
        api = services.api(nats_url=cluster.nodes[url_of["api"]].url)
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=30) as http:
            kernel_id = (await http.post("/api/kernels", json={"name": SPEC_NAME})).json()["id"]
            ws_url = f"{api.ws_url}/api/kernels/{kernel_id}/channels"
            async with connect(ws_url, additional_headers=api.headers) as ws:
                assert await _answered(ws, 30)
                watcher = await nats.connect(servers=[cluster.nodes[other].url])
                cluster.nodes[leader].process.kill()
                cluster.nodes[leader].process.wait()
                killed = time.monotonic()

                async def elected() -> float:
                    js = watcher.jetstream(timeout=1.0)
                    while True:
                        try:
                            info = await js.stream_info(f"KV_{subjects.KERNELS_BUCKET}")
                            if info.cluster is not None and info.cluster.leader:
                                return time.monotonic() - killed
                        except Exception:
                            pass
                        await asyncio.sleep(0.05)

                async def websocket() -> float:
                    while not await _answered(ws, 1.0):
                        pass
                    return time.monotonic() - killed

                async def reads() -> float:
                    while True:
                        try:
                            a = await http.get("/api/kernels", timeout=2)
                            b = await http.get(f"/api/kernels/{kernel_id}", timeout=2)
                            if a.status_code == b.status_code == 200:
                                return time.monotonic() - killed
                        except httpx.HTTPError:
                            pass
                        await asyncio.sleep(0.05)

                async def writes() -> float:
                    while True:
                        started = await http.post("/api/kernels", json={"name": SPEC_NAME})
                        if started.status_code == 201:
                            return time.monotonic() - killed
                        await asyncio.sleep(0.05)

                polls = {
                    "websocket": asyncio.ensure_future(websocket()),
                    "reads": asyncio.ensure_future(reads()),
                    "writes": asyncio.ensure_future(writes()),
                    "leader": asyncio.ensure_future(elected()),
                }
                await asyncio.wait(polls.values(), timeout=120)
                late = [name for name, task in polls.items() if not task.done()]
                for task in polls.values():
                    task.cancel()
                await watcher.close()
                if late:
                    raise RuntimeError(f"not recovered within 120 s: {late} (logs in {root})")
        return {name: task.result() for name, task in polls.items()}
    finally:
        services.stop_all()
        cluster.stop()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--victim", choices=ROLES, help="always this case (default: in turn)")
    args = parser.parse_args()
    results: list[dict[str, float]] = []
    for run in range(args.runs):
        victim = args.victim or ROLES[run % len(ROLES)]
        tmp = Path(tempfile.mkdtemp(prefix="kb-cluster-bench-"))
        times = await one_run(tmp, victim)  # kept for its logs if it fails
        shutil.rmtree(tmp, ignore_errors=True)
        results.append(times)
        print(
            f"run {run + 1} (registry leader = {victim}'s node): websocket "
            f"{times['websocket']:.2f} s, REST reads {times['reads']:.2f} s, "
            f"REST writes {times['writes']:.2f} s, new leader {times['leader']:.2f} s",
            flush=True,
        )
    for metric in ("websocket", "reads", "writes", "leader"):
        values = [r[metric] for r in results]
        print(
            f"{metric}: median {statistics.median(values):.2f} s, p95 {p95(values):.2f} s, "
            f"max {max(values):.2f} s"
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
