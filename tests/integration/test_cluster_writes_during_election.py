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
import time
from pathlib import Path

import httpx
import pytest
from channels_support import open_socket
from cluster_support import every_stream_led, quorumless, stream_leader

from kernelbus import subjects
from kernelbus.bus_kv import Bucket, kv_stream
from kernelbus.models import KernelRecord
from kernelbus_worker.sim.provisioner import SPEC_NAME

pytestmark = pytest.mark.integration

KERNELS = kv_stream(subjects.KERNELS_BUCKET)
WORKERS = kv_stream(subjects.WORKERS_BUCKET)


@pytest.mark.parametrize("crash", [False, True], ids=["worker-stays", "worker-crashes"])
async def test_rest_writes_go_on_while_the_registry_stream_has_no_leader(
    tmp_path: Path, crash: bool
) -> None:
    async with quorumless(tmp_path, move_to_victim=(WORKERS,)) as arranged:
        nc, api, services = arranged.nc, arranged.api, arranged.services
        workers_too = await stream_leader(nc, WORKERS) == await stream_leader(nc, KERNELS)
        kernels = await Bucket.open(nc, subjects.KERNELS_BUCKET)

        async def leaderless() -> None:
            await arranged.leaderless(KERNELS, *((WORKERS,) if workers_too else ()))

        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
            # Started with a leader: also what the api's worker and drain lists were last.
            before = await http.post("/api/kernels", json={"name": SPEC_NAME})
            assert before.status_code == 201, before.text
            earlier = before.json()["id"]

            killed_at = arranged.lose_quorum()

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
                arranged.worker.kill()  # its writes are pending: in its memory and runtime dir
                await leaderless()
            # The third node resumes: the two elect leaders; the pending writes land.
            arranged.resume()
            deadline = time.monotonic() + 90
            await arranged.until_led(KERNELS, deadline)
            print(f"a leader elected {time.monotonic() - killed_at:.2f} s after the kill")
            if crash:
                await every_stream_led(nc)  # a worker starts only with JetStream whole
                successor = services.worker(env=arranged.worker_env, nats_url=arranged.kept.url)
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
            assert listed.status_code == 200, listed.text
            ids = {k["id"] for k in listed.json()}
            assert new in ids and brief not in ids and earlier not in ids, ids
            assert (await http.delete(f"/api/kernels/{new}")).status_code == 204
