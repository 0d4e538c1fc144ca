"""Draining a worker (`POST /api/admin/workers/{id}/drain`): new starts go to the other
worker, the drained worker's kernels keep running and answering; undrain lets it take kernels
again; bad ids and missing tokens change nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from channels_support import open_socket

from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.integration


async def test_drain_sends_new_starts_elsewhere(services: Services, tmp_path: Path) -> None:
    write_kernelspec(tmp_path / "jupyter")
    env = {"JUPYTER_PATH": str(tmp_path / "jupyter"), "KERNELBUS_WORKER_POOL": ""}
    services.worker(env={**env, "KERNELBUS_WORKER_ID": "drain-a"})
    services.worker(env={**env, "KERNELBUS_WORKER_ID": "drain-b"})
    api = services.api()
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:

        async def owner(kernel_id: str) -> str:
            nc_workers = (await http.get("/api/admin/workers")).json()
            assert {w["worker_id"] for w in nc_workers} >= {"drain-a", "drain-b"}
            from kernelbus import bus
            from kernelbus.registry import Registry
            from kernelbus.settings import BusSettings

            nc = await bus.connect(BusSettings(nats_url=services.nats_url), name="drain-test")
            try:
                record = await (await Registry.open(nc.jetstream())).get_kernel(kernel_id)
            finally:
                await bus.close(nc)
            assert record is not None
            return record.worker_id

        # Bad input: refused, nothing drained.
        assert (await http.post("/api/admin/workers/bad%20id/drain")).status_code == 400
        no_token = await http.post(
            "/api/admin/workers/drain-a/drain", headers={"Authorization": ""}
        )
        assert no_token.status_code in (401, 403)
        workers = {w["worker_id"]: w for w in (await http.get("/api/admin/workers")).json()}
        assert not workers["drain-a"]["draining"] and not workers["drain-b"]["draining"]

        # A kernel on drain-a, then drain it.
        first = None
        for _ in range(4):
            started = await http.post("/api/kernels", json={"name": SPEC_NAME})
            assert started.status_code == 201, started.text
            if await owner(started.json()["id"]) == "drain-a":
                first = started.json()["id"]
                break
            assert (await http.delete(f"/api/kernels/{started.json()['id']}")).status_code == 204
        assert first is not None, "no kernel was placed on drain-a"
        drained = await http.post("/api/admin/workers/drain-a/drain")
        assert drained.status_code == 200 and drained.json()["draining"] is True
        workers = {w["worker_id"]: w for w in (await http.get("/api/admin/workers")).json()}
        assert workers["drain-a"]["draining"] and not workers["drain-b"]["draining"]

        later = []
        for _ in range(3):
            started = await http.post("/api/kernels", json={"name": SPEC_NAME})
            assert started.status_code == 201, started.text
            later.append(started.json()["id"])
            assert await owner(later[-1]) == "drain-b"

        # The drained worker's kernel runs on and answers.
        socket = await open_socket(api, first)
        try:
            msgs = await socket.run("2 + 3")
            assert any(m["header"]["msg_type"] == "execute_result" for m in msgs)
        finally:
            await socket.close()

        undrained = await http.delete("/api/admin/workers/drain-a/drain")
        assert undrained.status_code == 200 and undrained.json()["draining"] is False
        workers = {w["worker_id"]: w for w in (await http.get("/api/admin/workers")).json()}
        assert not workers["drain-a"]["draining"]
        for kernel_id in [first, *later]:
            assert (await http.delete(f"/api/kernels/{kernel_id}")).status_code == 204
