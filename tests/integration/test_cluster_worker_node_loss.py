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
import signal
import time
from pathlib import Path

import httpx
import nats
import pytest
from channels_support import execute, open_socket

from kernelbus import bus
from kernelbus.natscluster import NatsCluster, start_cluster
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration

COUNT = 60


async def _jetstream_ready(cluster: NatsCluster, timeout: float = 60) -> None:
    nc = await nats.connect(servers=cluster.urls.split(","))
    try:
        await bus.wait_for_jetstream(nc, timeout)
    finally:
        await nc.close()


async def test_output_resumes_when_only_the_workers_node_dies(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    try:
        await _jetstream_ready(cluster)
        services.worker(nats_url=cluster.nodes[0].url)
        api = services.api(nats_url=cluster.nodes[1].url)
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            started = await http.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            socket = await open_socket(api, kernel_id)
            try:
                await socket.run("x = 41")
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
                            cluster.nodes[0].process.kill()
                            cluster.nodes[0].process.wait()
                            killed = time.monotonic()
                    elif kind == "execute_reply":
                        replied = True
                    elif kind == "status" and msg["content"]["execution_state"] == "idle":
                        idle = True
                print(f"\nthe cell ended {time.monotonic() - killed:.1f} s after the kill")
                assert killed
                assert values == list(range(COUNT)), f"{len(values)} values: {values}"
                after = await socket.run("print(x + 1)")
                assert any(
                    m["header"]["msg_type"] == "stream" and m["content"]["text"] == "42\n"
                    for m in after
                )
            finally:
                await socket.close()
            # Right after a node loss a registry write may meet a stream leader election (its
            # status during elections is issue 14's, not this test's): retried, shown.
            statuses = []
            deadline = time.monotonic() + 60
            while not statuses or statuses[-1] != 204:
                assert time.monotonic() < deadline, f"DELETE answered {statuses}"
                statuses.append((await http.delete(f"/api/kernels/{kernel_id}")).status_code)
                await asyncio.sleep(0.2 if statuses[-1] != 204 else 0)
            print(f"DELETE answered {statuses}")
    finally:
        services.stop_all()
        cluster.stop()


async def test_input_sent_into_the_dying_node_is_sent_again(tmp_path: Path) -> None:
    """An execute published while the worker's node can no longer deliver it (the node is
    stopped, then killed: the api's node had already forwarded it into the route) is lost
    without NATS's "no responders". On the worker's re-attach request the api names the input
    it still keeps; the worker answers which never arrived, and the api sends that again
    (ADR 0024). Before, the execute was never answered."""
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    try:
        await _jetstream_ready(cluster)
        worker = services.worker(nats_url=cluster.nodes[0].url)
        api = services.api(nats_url=cluster.nodes[1].url)
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            started = await http.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            socket = await open_socket(api, kernel_id)
            try:
                await socket.run("x = 41")
                node = cluster.nodes[0].process
                node.send_signal(signal.SIGSTOP)
                msg_id = await socket.send(execute("print(x + 1)"))
                # Not an ordering between our processes: time for the api's node to write
                # the message into its route to the stopped node, where the kill loses it.
                await asyncio.sleep(1.0)
                node.kill()
                node.wait()
                seen = await socket.until_finished(msg_id, timeout=90)
                printed = [
                    m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream"
                ]
                assert printed == ["42\n"]
                # Usually the execute is lost in the route and named missing at the re-attach;
                # in one loaded run it got through before the node stopped (no resend needed).
                resent = "never reached the worker: sent again" in api.service.log()
                named = "never arrived: the api sends them again" in worker.log()
                assert resent == named, (resent, named)
                print(f"\nthe execute was sent again: {resent}")
                again = await socket.run("print(x + 2)")
                assert [
                    m["content"]["text"] for m in again if m["header"]["msg_type"] == "stream"
                ] == ["43\n"]
            finally:
                await socket.close()
            statuses = []
            deadline = time.monotonic() + 60
            while not statuses or statuses[-1] != 204:
                assert time.monotonic() < deadline, f"DELETE answered {statuses}"
                statuses.append((await http.delete(f"/api/kernels/{kernel_id}")).status_code)
                await asyncio.sleep(0.2 if statuses[-1] != 204 else 0)
    finally:
        services.stop_all()
        cluster.stop()
