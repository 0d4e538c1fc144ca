"""The simulated kernel (`kernelbus_worker.sim`, for tests and benchmarks) runs through the
same worker path as a real kernel: started by kernelspec through its provisioner, bridged
over NATS, executing integer arithmetic, interrupted, restarted and shut down."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from channels_support import is_idle, of_request, open_socket, request, types

from kernelbus.testing.plugin import Services
from kernelbus_worker.sim.host import evaluate
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.integration


def test_evaluate_is_integer_arithmetic_only() -> None:
    assert evaluate("6*7") == 42
    assert evaluate("-(2+3)//2 % 7") == (-(2 + 3) // 2) % 7
    assert evaluate("__import__('os')") is None
    assert evaluate("1/0") is None
    assert evaluate("2**8") is None


async def test_sim_kernels_run_through_the_worker(services: Services, tmp_path: Path) -> None:
    write_kernelspec(tmp_path / "jupyter")
    services.worker(env={"JUPYTER_PATH": str(tmp_path / "jupyter")})
    api = services.api()
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        specs = (await http.get("/api/kernelspecs")).json()
        assert SPEC_NAME in specs["kernelspecs"]
        ids = []
        for _ in range(3):
            started = await http.post("/api/kernels", json={"name": SPEC_NAME})
            assert started.status_code == 201, started.text
            ids.append(started.json()["id"])
        kernel_id = ids[0]
        socket = await open_socket(api, kernel_id)
        try:
            info_id = await socket.send(request("kernel_info_request", {}))
            msgs = await socket.until(
                lambda m: (
                    m["header"]["msg_type"] == "kernel_info_reply"
                    and m["parent_header"].get("msg_id") == info_id
                )
            )
            assert msgs[-1]["content"]["implementation"] == "kernelbus-sim"

            msgs = await socket.run("6 * 7")
            results = [m for m in msgs if m["header"]["msg_type"] == "execute_result"]
            assert results[0]["content"]["data"]["text/plain"] == "42"
            assert "busy" in [m["content"].get("execution_state") for m in msgs]
            echoed = await socket.run("hello")
            streams = [m for m in echoed if m["header"]["msg_type"] == "stream"]
            assert streams[0]["content"]["text"] == "hello"

            interrupted = await http.post(f"/api/kernels/{kernel_id}/interrupt")
            assert interrupted.status_code == 204, interrupted.text
            restarted = await http.post(f"/api/kernels/{kernel_id}/restart")
            assert restarted.status_code == 200, restarted.text
            after = await socket.run("1 + 1")
            assert "execute_reply" in types(of_request(after, after[-1]["parent_header"]["msg_id"]))
            assert any(is_idle(m) for m in after)
        finally:
            await socket.close()
        for kernel_id in ids:
            assert (await http.delete(f"/api/kernels/{kernel_id}")).status_code == 204
        listed = {k["id"] for k in (await http.get("/api/kernels")).json()}
        assert not listed & set(ids)
