"""A 3-node JetStream cluster under Kernelbus: buckets and streams are replicated 3 times, and
losing one node (SIGKILL) while a client executes loses no kernel; REST and the websocket
carry on once the services have reconnected to another node (measured; bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import nats
import pytest
from channels_support import execute, open_socket

from kernelbus import subjects
from kernelbus.natscluster import NatsCluster, start_cluster
from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.integration


async def _jetstream_ready(cluster: NatsCluster, timeout: float = 60) -> None:
    nc = await nats.connect(servers=cluster.urls.split(","))
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except Exception:
                assert time.monotonic() < deadline, "JetStream never became ready"
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_one_node_killed_loses_nothing(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    try:
        await _jetstream_ready(cluster)
        write_kernelspec(tmp_path / "jupyter")
        services.worker(env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
        api = services.api()
        nc = await nats.connect(servers=cluster.urls.split(","))
        try:
            js = nc.jetstream()
            info = await js.stream_info(f"KV_{subjects.KERNELS_BUCKET}")
            assert info.config.num_replicas == 3
            events = await js.stream_info(subjects.EVENTS_STREAM.name)
            assert events.config.num_replicas == 3
            # Kill the leader of the kernel registry's stream: the hardest node to lose.
            assert info.cluster is not None and info.cluster.leader is not None
            victim = int(info.cluster.leader.rsplit("-", 1)[1])
        finally:
            await nc.close()

        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=30) as http:
            ids = []
            for _ in range(3):
                started = await http.post("/api/kernels", json={"name": SPEC_NAME})
                assert started.status_code == 201, started.text
                ids.append(started.json()["id"])
            socket = await open_socket(api, ids[0])
            try:
                before = await socket.run("20 + 22")
                assert any(m["header"]["msg_type"] == "execute_result" for m in before)

                killed_at = time.monotonic()
                cluster.nodes[victim].process.kill()
                cluster.nodes[victim].process.wait()

                # A client keeps executing; each try has a short reply window.
                rest_back = ws_back = None
                deadline = killed_at + 60
                while rest_back is None or ws_back is None:
                    assert time.monotonic() < deadline, (
                        f"no recovery in 60 s: REST {rest_back}, websocket {ws_back}"
                    )
                    if ws_back is None:
                        msg_id = await socket.send(execute("6 * 7"))
                        try:
                            got = await socket.until_finished(msg_id, timeout=2)
                            if any(m["header"]["msg_type"] == "execute_result" for m in got):
                                ws_back = time.monotonic() - killed_at
                        except TimeoutError:
                            pass
                    if rest_back is None:
                        try:
                            listed = await http.get("/api/kernels", timeout=2)
                            one = await http.get(f"/api/kernels/{ids[1]}", timeout=2)
                            if listed.status_code == 200 and one.status_code == 200:
                                assert set(ids) <= {k["id"] for k in listed.json()}
                                rest_back = time.monotonic() - killed_at
                        except httpx.HTTPError:
                            pass
                    await asyncio.sleep(0.05)
                # New starts need the registry's stream to have elected a new leader.
                while True:
                    started = await http.post("/api/kernels", json={"name": SPEC_NAME})
                    if started.status_code == 201:
                        break
                    assert time.monotonic() < deadline, started.text
                    await asyncio.sleep(0.1)
                start_back = time.monotonic() - killed_at
                ids.append(started.json()["id"])
                print(
                    f"\nSIGKILL of the registry's stream leader: REST reads {rest_back:.2f} s, "
                    f"websocket execute {ws_back:.2f} s, new starts {start_back:.2f} s"
                )
                listed = await http.get("/api/kernels")
                assert set(ids) <= {k["id"] for k in listed.json()}
            finally:
                await socket.close()
            for kernel_id in ids:
                assert (await http.delete(f"/api/kernels/{kernel_id}")).status_code == 204
    finally:
        services.stop_all()
        cluster.stop()
