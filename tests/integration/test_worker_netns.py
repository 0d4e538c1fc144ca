"""A worker on its own "host": nats-server and the api run in one network namespace, the
worker in another, joined only by a veth pair on a private /30 made here. The worker reaches
NATS across the veth; its kernel's ZMQ ports are on the worker namespace's own loopback, which
the api cannot reach, so everything crosses NATS. Skipped (with the reason) where `ip netns`
is not permitted. Namespaces and links are removed whatever happens."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, entry_point, spawn, wait_for

pytestmark = pytest.mark.integration


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@dataclass
class Hosts:
    hub: str
    worker: str
    hub_ip: str
    worker_ip: str


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    tag = uuid.uuid4().hex[:6]
    hub, worker = f"kbhub-{tag}", f"kbwrk-{tag}"
    veth_hub, veth_worker = f"kbh{tag}", f"kbw{tag}"
    probe = _ip("netns", "add", hub)
    if probe.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {probe.stderr.strip()}")
    base = 4 * random.randrange(0, 64)
    net = f"10.{random.randrange(200, 250)}.{random.randrange(0, 256)}"
    hub_ip, worker_ip = f"{net}.{base + 1}", f"{net}.{base + 2}"
    try:
        steps = [
            ("netns", "add", worker),
            ("link", "add", veth_hub, "type", "veth", "peer", "name", veth_worker),
            ("link", "set", veth_hub, "netns", hub),
            ("link", "set", veth_worker, "netns", worker),
            ("-n", hub, "addr", "add", f"{hub_ip}/30", "dev", veth_hub),
            ("-n", worker, "addr", "add", f"{worker_ip}/30", "dev", veth_worker),
            ("-n", hub, "link", "set", veth_hub, "up"),
            ("-n", worker, "link", "set", veth_worker, "up"),
            ("-n", hub, "link", "set", "lo", "up"),
            ("-n", worker, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        yield Hosts(hub, worker, hub_ip, worker_ip)
    finally:
        _ip("-n", hub, "link", "del", veth_hub)  # deletes its peer too
        _ip("netns", "del", worker)
        _ip("netns", "del", hub)


def _in(ns: str, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


_CLIENT = r"""
import asyncio, json, sys, uuid
import httpx
from websockets.asyncio.client import connect

async def main(url, token, spec):
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        started = await http.post("/api/kernels", json={"name": spec})
        assert started.status_code == 201, started.text
        kernel = started.json()["id"]
        ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
        async with connect(ws_url, additional_headers=headers) as ws:
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                      "session": "s", "version": "5.3", "date": "2026-01-01T00:00:00Z"}
            await ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                "content": {"code": "import os; print(6 * 7, os.getpid())"},
                "channel": "shell", "buffers": []}))
            out = ""
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["header"]["msg_type"] == "stream":
                    out += msg["content"]["text"]
                idle = msg["header"]["msg_type"] == "status" and (
                    msg["content"]["execution_state"] == "idle")
                if idle and out:
                    break
        info = (await http.get(f"/api/kernels/{kernel}")).json()
        print(json.dumps({"kernel": kernel, "out": out, "state": info["execution_state"]}))

asyncio.run(main(*sys.argv[1:]))
"""


def test_worker_in_its_own_namespace_serves_kernels_over_nats(hosts: Hosts, tmp_path: Path) -> None:
    started: list[ServiceProcess] = []
    nats_port = natsserver.free_port()
    (tmp_path / "nats").mkdir()
    config = natsserver.write_config(
        (tmp_path / "nats").resolve(), nats_port
    )  # listen on loopback by default: rewrite for the hub's veth address
    text = config.read_text().replace(
        f"listen: 127.0.0.1:{nats_port}", f"listen: {hosts.hub_ip}:{nats_port}"
    )
    config.write_text(text)
    nats_url = f"nats://{hosts.hub_ip}:{nats_port}"
    logs = tmp_path / "logs"
    try:
        nats = spawn(
            "nats-server", _in(hosts.hub, [natsserver.find_binary(), "-c", str(config)]), {}, logs
        )
        started.append(nats)
        wait_for(lambda: "Server is ready" in nats.log(), 30, "nats-server", nats)
        api_port = natsserver.free_port()  # inside the hub namespace, which has nothing else
        api = spawn(
            "kernelbus-api",
            _in(hosts.hub, entry_point("kernelbus-api")),
            {
                "NATS_URL": nats_url,
                "KERNELBUS_PORT": str(api_port),
                "KERNELBUS_IP": "127.0.0.1",
                "KERNELBUS_AUTH_TOKEN": "ns-token",
                "NATS_CONNECT_ATTEMPTS": "40",
            },
            logs,
        )
        started.append(api)
        worker = spawn(
            "kernelbus-worker",
            _in(hosts.worker, entry_point("kernelbus-worker")),
            {
                "NATS_URL": nats_url,
                "NATS_CONNECT_ATTEMPTS": "40",
                "KERNELBUS_WORKER_ID": "netns-worker",
                "KERNELBUS_WORKER_RUNTIME_DIR": str(tmp_path / "worker-runtime"),
            },
            logs,
        )
        started.append(worker)
        wait_for(lambda: "kernel-worker ready" in worker.log(), 90, "the worker", worker)
        wait_for(lambda: "Application startup complete" in api.log(), 90, "the api", api)

        client = tmp_path / "client.py"
        client.write_text(_CLIENT)
        result = subprocess.run(
            _in(
                hosts.hub,
                [
                    sys.executable,
                    str(client),
                    f"http://127.0.0.1:{api_port}",
                    "ns-token",
                    "python3",
                ],
            ),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ},
        )
        assert result.returncode == 0, result.stdout + result.stderr + api.log()[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        answer, kernel_pid = report["out"].split()
        assert answer == "42"
        assert report["state"] in ("idle", "busy")
        # The kernel runs in the worker's namespace (its ZMQ ports are on that namespace's
        # loopback, unreachable from the hub): its pid is among that namespace's processes.
        worker_ns_pids = _ip("netns", "pids", hosts.worker).stdout.split()
        assert kernel_pid in worker_ns_pids
        assert str(worker.pid) in worker_ns_pids
        assert kernel_pid not in _ip("netns", "pids", hosts.hub).stdout.split()
    finally:
        for process in reversed(started):
            process.stop()
