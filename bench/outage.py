"""What clients see through a NATS outage and a lost worker, timed (numbers in RESULTS.md).

1. A cell prints a counter every 0.1 s on a websocket opened before nats-server is stopped for
   `--outage` seconds and restarted on the same port and store: values received, missing,
   repeated, in order; REST latency during the outage (every answer a 503); seconds from the
   restart until REST answers 200 again.
2. A worker is SIGKILLed and never comes back: seconds from the kill until its connected
   client gets `status: dead` (its last heartbeat was at most 2 s before the kill, and the
   heartbeat TTL is 10 s).

Usage: `python bench/outage.py [--outage 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).parent))

from stack import Target, run

from kernelbus import natsserver
from kernelbus.processes import kill_orphaned_kernels
from kernelbus.testing.plugin import Services

COUNTER = "import time\nfor i in range({n}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


def execute(code: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "bench",
        "session": "",
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }
    msg = {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "content": {"code": code, "silent": False},
        "buffers": [],
    }
    return msg_id, json.dumps(msg)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await ws.recv()))


async def counter_through_outage(
    target: Target, nats: natsserver.NatsServer, outage: float
) -> tuple[natsserver.NatsServer, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=60) as http:
        kernel_id = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
    url = target.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    total = int((outage + 8) / 0.1)
    values: list[int] = []
    result: dict[str, Any] = {}
    async with connect(f"{url}?session_id=bench", additional_headers=target.headers) as ws:
        msg_id, frame = execute(COUNTER.format(n=total))
        await ws.send(frame)
        while len(values) < 10:
            msg = await recv(ws)
            if msg["msg_type"] == "stream" and msg["parent_header"].get("msg_id") == msg_id:
                values += [int(v) for v in msg["content"]["text"].split()]
        nats.stop()
        stopped = time.monotonic()
        latencies = await rest_during(target, stopped + outage)
        restarted = natsserver.start(nats.store_dir, port=nats.port)
        back = time.monotonic()
        rest_ok = asyncio.create_task(first_200(target, back))
        first_after: float | None = None
        done = False
        while not done:
            msg = await recv(ws)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                first_after = first_after or time.monotonic() - back
                values += [int(v) for v in msg["content"]["text"].split()]
            done = msg["msg_type"] == "execute_reply"
        result.update(
            total=total,
            received=len(values),
            missing=len(set(range(total)) - set(values)),
            repeated=len(values) - len(set(values)),
            in_order=values == sorted(values),
            rest_503_ms_median=round(statistics.median(latencies[1]) * 1000),
            rest_503_ms_max=round(max(latencies[1]) * 1000),
            rest_statuses=sorted(set(latencies[0])),
            output_resumed_s=round(first_after or -1, 2),
            rest_200_after_restart_s=round(await rest_ok, 2),
        )
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=60) as http:
        await http.delete(f"/api/kernels/{kernel_id}")
    return restarted, result


async def rest_during(target: Target, until: float) -> tuple[list[int], list[float]]:
    statuses, latencies = [], []
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=10) as http:
        await asyncio.sleep(0.5)  # let the api notice
        while time.monotonic() < until:
            began = time.monotonic()
            response = await http.get("/api/kernels")
            latencies.append(time.monotonic() - began)
            statuses.append(response.status_code)
            await asyncio.sleep(0.2)
    return statuses, latencies


async def first_200(target: Target, since: float) -> float:
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=10) as http:
        while True:
            try:
                if (await http.get("/api/kernels")).status_code == 200:
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)


async def worker_loss(target: Target, services: Services) -> dict[str, Any]:
    doomed = services.worker({"KERNELBUS_WORKER_MAX_KERNELS": "500"})
    async with httpx.AsyncClient(base_url=target.url, headers=target.headers, timeout=60) as http:
        kernel_id = (await http.post("/api/kernels", json={"name": "python3"})).json()["id"]
    url = target.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"
    async with connect(f"{url}?session_id=loss", additional_headers=target.headers) as ws:
        _, frame = execute("1")
        await ws.send(frame)
        await asyncio.sleep(1)
        doomed.kill()
        killed = time.monotonic()
        while True:
            msg = await recv(ws)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "dead":
                break
        dead_after = time.monotonic() - killed
    kill_orphaned_kernels(services.runtime_dir)
    return {
        "dead_after_kill_s": round(dead_after, 1),
        "dead_after_heartbeat_expiry_s": f"{dead_after - 10:.1f} to {dead_after - 8:.1f}",
    }


async def main(outage: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="kernelbus-bench-outage-"))
    nats = natsserver.start(root / "nats", log_file=root / "nats.log")
    services = Services(root, nats.url)
    try:
        services.worker()
        api = services.api(token="bench-token")
        services.spawn("kernelbus-culler", {})
        target = Target(api.url, api.token)
        await asyncio.sleep(11)  # the culler judges workers after a steady heartbeat TTL
        nats, result = await counter_through_outage(target, nats, outage)
        print(json.dumps({"outage_s": outage, **result}))
        print(json.dumps(await worker_loss(target, services)))
    finally:
        services.stop_all()
        nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds NATS is down")
    run(main(parser.parse_args().outage))
