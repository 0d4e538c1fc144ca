"""In a NATS cluster, the node of a *worker* dies while the api replica's node lives: the
worker reconnects elsewhere at once, but the api replica never lost its connection, so it will
never re-attach its websockets. Before, the worker held the kernel's output for them until
its outage settle passed and then gave them up ("did not come back after the bus outage"):
the cell's output stopped for good while the websocket stayed open. Now the worker pings the
replicas of its held connections right after its reconnect and resumes those that answer.

Real 3-node nats-server cluster, worker (connected to node 0 only; it learns the others from
the cluster), api (node 1 only), a real ipykernel kernel and a real websocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels_support import KernelSocket, execute, open_socket
from cluster_support import jetstream_ready

from kernelbus.natscluster import NatsCluster, start_cluster
from kernelbus.processes import ServiceProcess
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

COUNT = 60


@dataclass
class Arranged:
    cluster: NatsCluster
    worker: ServiceProcess
    api: ApiProcess
    http: httpx.AsyncClient
    kernel_id: str
    socket: KernelSocket


@contextlib.asynccontextmanager
async def kernel_with_worker_on_node_0(tmp_path: Path) -> AsyncIterator[Arranged]:
    """A 3-node cluster, the worker on node 0 only, the api on node 1 only, a python3 kernel
    with an open websocket that already ran `x = 41`. The kernel is deleted afterwards (right
    after a node loss a registry write may meet a stream leader election: retried, shown)."""
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    try:
        await (await jetstream_ready(cluster)).close()
        worker = services.worker(nats_url=cluster.nodes[0].url)
        api = services.api(nats_url=cluster.nodes[1].url)
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            started = await http.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            socket = await open_socket(api, kernel_id)
            try:
                await socket.run("x = 41")
                yield Arranged(cluster, worker, api, http, kernel_id, socket)
            finally:
                await socket.close()
            statuses: list[int] = []
            deadline = time.monotonic() + 60
            while not statuses or statuses[-1] != 204:
                assert time.monotonic() < deadline, f"DELETE answered {statuses}"
                statuses.append((await http.delete(f"/api/kernels/{kernel_id}")).status_code)
                await asyncio.sleep(0.2 if statuses[-1] != 204 else 0)
            print(f"DELETE answered {statuses}")
    finally:
        services.stop_all()
        cluster.stop()


def printed(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["content"]["text"] for m in msgs if m["header"]["msg_type"] == "stream"]


async def test_output_resumes_when_only_the_workers_node_dies(tmp_path: Path) -> None:
    async with kernel_with_worker_on_node_0(tmp_path) as arranged:
        socket, node = arranged.socket, arranged.cluster.nodes[0].process
        code = (
            "import time\n"
            f"for i in range({COUNT}):\n"
            "    print(i, flush=True)\n"
            "    time.sleep(0.1)\n"
        )
        msg_id = await socket.send(execute(code))
        values: list[int] = []
        replied = idle = False
        killed = 0.0
        while not (replied and idle):
            msg = await socket.recv(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                values += [int(v) for v in msg["content"]["text"].split()]
                if len(values) >= 10 and not killed:
                    node.kill()
                    node.wait()
                    killed = time.monotonic()
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        print(f"\nthe cell ended {time.monotonic() - killed:.1f} s after the kill")
        assert killed
        assert values == list(range(COUNT)), f"{len(values)} values: {values}"
        assert "42\n" in printed(await socket.run("print(x + 1)"))


async def test_input_sent_into_the_dying_node_is_sent_again(tmp_path: Path) -> None:
    """An execute published while the worker's node can no longer deliver it (the node is
    stopped, then killed: the api's node had already forwarded it into the route) is lost
    without NATS's "no responders". On the worker's re-attach request the api names the input
    it still keeps; the worker answers which never arrived, and the api sends that again
    (ADR 0024). Before, the execute was never answered."""
    async with kernel_with_worker_on_node_0(tmp_path) as arranged:
        socket, node = arranged.socket, arranged.cluster.nodes[0].process
        node.send_signal(signal.SIGSTOP)
        msg_id = await socket.send(execute("print(x + 1)"))
        # Not an ordering between our processes: time for the api's node to write the
        # message into its route to the stopped node, where the kill loses it.
        await asyncio.sleep(1.0)
        node.kill()
        node.wait()
        assert printed(await socket.until_finished(msg_id, timeout=90)) == ["42\n"]
        # Usually the execute is lost in the route and named missing at the re-attach; in
        # one loaded run it got through before the node stopped (no resend needed).
        resent = "never reached the worker: sent again" in arranged.api.service.log()
        named = "never arrived: the api sends them again" in arranged.worker.log()
        assert resent == named, (resent, named)
        print(f"\nthe execute was sent again: {resent}")
        assert printed(await socket.run("print(x + 2)")) == ["43\n"]
