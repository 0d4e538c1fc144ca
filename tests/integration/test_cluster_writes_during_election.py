"""REST writes go on while the kernel registry's stream has no leader (issue 14, ADR 0023).

Real 3-node nats-server cluster, real worker and api (both on one node, X), a real ipykernel
kernel and simulated ones. The node leading `KV_kb_kernels` (and, moved there by a preferred
step-down, `KV_kb_workers`) is SIGKILLed. So that the calls below meet a stream without a
leader for sure, rather than racing nats-server's random 4-9 s election timer, the third node
is paused (SIGSTOP) just before the kill: X alone has no quorum, no stream can elect a leader
until the third node resumes (SIGCONT). Right before and right after each call the test checks
that the stream still has no leader.

Meanwhile: `POST /api/kernels` answers 201, `GET /api/kernels/{id}` finds the kernel, its
websocket executes code, `DELETE` answers 204 (of a kernel started before the kill and of one
started meanwhile) and `GET /api/kernels` lists the new kernel and not the deleted ones. Once
the node resumes and leaders are elected, the worker's pending writes land: the new kernel's
record is in the bucket, the deleted ones' are not.

`crash`: the worker is SIGKILLed while its writes are still pending (before the node resumes);
its successor (same worker id and runtime dir) re-adopts the new kernel from the record kept
in the runtime dir, writes it, removes the deleted kernels' records, and the kernel runs code.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx
import nats
import pytest
from channels_support import open_socket
from cluster_support import (
    every_stream_led,
    jetstream_ready,
    lead_on,
    registry_leader,
    stream_leader,
)

from kernelbus import subjects
from kernelbus.bus_kv import Bucket, kv_stream
from kernelbus.models import KernelRecord
from kernelbus.natscluster import start_cluster
from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.integration

KERNELS = kv_stream(subjects.KERNELS_BUCKET)
WORKERS = kv_stream(subjects.WORKERS_BUCKET)


@pytest.mark.parametrize("crash", [False, True], ids=["worker-stays", "worker-crashes"])
async def test_rest_writes_go_on_while_the_registry_stream_has_no_leader(
    tmp_path: Path, crash: bool
) -> None:
    cluster = start_cluster(tmp_path / "cluster", 3)
    services = Services(tmp_path, cluster.urls)
    paused = None
    nc = await jetstream_ready(cluster)
    try:
        leader = await registry_leader(nc)
        victim = cluster.nodes[leader]
        victim_name = f"{cluster.name}-{leader}"
        kept = cluster.nodes[(leader + 1) % 3]
        third = cluster.nodes[(leader + 2) % 3]
        workers_too = await lead_on(nc, WORKERS, victim_name)
        print(f"\nthe workers bucket is led by the victim too: {workers_too}")
        assert await stream_leader(nc, KERNELS) == victim_name
        await nc.close()
        # The test's own connection, worker and api are on the node that stays up.
        nc = await nats.connect(servers=[kept.url])
        write_kernelspec(tmp_path / "jupyter")
        worker_env = {
            "JUPYTER_PATH": str(tmp_path / "jupyter"),
            "KERNELBUS_WORKER_ID": f"elect-{uuid.uuid4().hex[:8]}",
        }
        worker = services.worker(env=worker_env, nats_url=kept.url)
        api = services.api(nats_url=kept.url)
        kernels = await Bucket.open(nc, subjects.KERNELS_BUCKET)

        async def leaderless() -> None:
            assert await stream_leader(nc, KERNELS) is None, "the kernels stream has a leader"
            if workers_too:
                assert await stream_leader(nc, WORKERS) is None, "the workers stream has a leader"

        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            # Started with a leader: also what the api's worker and drain lists were last.
            before = await http.post("/api/kernels", json={"name": SPEC_NAME})
            assert before.status_code == 201, before.text
            earlier = before.json()["id"]

            paused = third.process
            paused.send_signal(signal.SIGSTOP)
            victim.process.kill()
            victim.process.wait()
            killed_at = time.monotonic()

            await leaderless()
            started = await http.post("/api/kernels", json={"name": "python3"})
            await leaderless()
            assert started.status_code == 201, started.text
            new = started.json()["id"]
            print(f"POST answered 201 {time.monotonic() - killed_at:.2f} s after the kill")

            got = await http.get(f"/api/kernels/{new}")
            await leaderless()
            assert got.status_code == 200, got.text
            assert got.json()["id"] == new

            socket = await open_socket(api, new)
            try:
                out = await socket.run("print(6 * 7)")
            finally:
                await socket.close()
            await leaderless()
            printed = [m["content"]["text"] for m in out if m["header"]["msg_type"] == "stream"]
            assert printed == ["42\n"], out

            # A kernel started before the kill: in the api's view, read without a leader.
            got = await http.get(f"/api/kernels/{earlier}")
            await leaderless()
            assert got.status_code == 200, got.text

            passing = await http.post("/api/kernels", json={"name": SPEC_NAME})
            await leaderless()
            assert passing.status_code == 201, passing.text
            brief = passing.json()["id"]
            for kernel_id in (brief, earlier):
                deleted = await http.delete(f"/api/kernels/{kernel_id}")
                await leaderless()
                assert deleted.status_code == 204, deleted.text
                gone = await http.get(f"/api/kernels/{kernel_id}")
                await leaderless()
                assert gone.status_code == 404, gone.text

            listed = await http.get("/api/kernels")
            await leaderless()
            assert listed.status_code == 200, listed.text
            ids = {k["id"] for k in listed.json()}
            assert new in ids and brief not in ids and earlier not in ids, ids
            print(f"every call done without a leader, {time.monotonic() - killed_at:.2f} s")

            if crash:
                worker.kill()  # its writes are pending: in its memory and its runtime dir
                await leaderless()
            # The third node resumes: the two elect leaders; the pending writes land.
            paused.send_signal(signal.SIGCONT)
            paused = None
            deadline = time.monotonic() + 90
            while await stream_leader(nc, KERNELS) is None:
                assert time.monotonic() < deadline, "no leader elected within 90 s"
                await asyncio.sleep(0.2)
            print(f"a leader elected {time.monotonic() - killed_at:.2f} s after the kill")
            if crash:
                await every_stream_led(nc)  # a worker starts only with JetStream whole
                successor = services.worker(env=worker_env, nats_url=kept.url)
                assert "re-adopted kernel" in successor.log(), successor.log()
            while True:
                held = {k: await kernels.get(k) is not None for k in (new, brief, earlier)}
                if held == {new: True, brief: False, earlier: False}:
                    break
                assert time.monotonic() < deadline, f"the registry holds {held}"
                await asyncio.sleep(0.2)
            record = await kernels.get(new)
            assert record is not None
            assert KernelRecord.model_validate_json(record.value).execution_state != "dead"

            socket = await open_socket(api, new)
            try:
                out = await socket.run("print(7 * 6)")
            finally:
                await socket.close()
            printed = [m["content"]["text"] for m in out if m["header"]["msg_type"] == "stream"]
            assert printed == ["42\n"], out

            listed = await http.get("/api/kernels")
            ids = {k["id"] for k in listed.json()}
            assert new in ids and brief not in ids and earlier not in ids, ids
            assert (await http.delete(f"/api/kernels/{new}")).status_code == 204
    finally:
        if paused is not None:
            paused.send_signal(signal.SIGCONT)
        await nc.close()
        services.stop_all()
        cluster.stop()
