"""`KERNELBUS_CLIENT_ENVS`: a start request's non-`KERNEL_*` variables reach the kernel only
when allow-listed (PROTOCOLS §1.5), seen from inside the kernel's own `os.environ`."""

from __future__ import annotations

import json

import httpx
import pytest
from channels_support import open_socket

from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration

PROBE = "import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"


async def test_only_allow_listed_and_kernel_variables_reach_the_kernel(
    services: Services,
) -> None:
    services.worker()
    api = services.api(env={"KERNELBUS_CLIENT_ENVS": "KB_ALLOWED, KB_ALSO_ALLOWED"})
    env = {"KB_ALLOWED": "yes", "KB_REFUSED": "no", "KERNEL_CUSTOM": "custom"}
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as http:
        started = await http.post("/api/kernels", json={"name": "python3", "env": env})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        try:
            seen = await _kernel_environ(api, kernel_id, [*env, "KB_ALSO_ALLOWED"])
        finally:
            await http.delete(f"/api/kernels/{kernel_id}")
    assert seen == {
        "KB_ALLOWED": "yes",
        "KB_REFUSED": None,
        "KERNEL_CUSTOM": "custom",
        "KB_ALSO_ALLOWED": None,  # allow-listed but not sent: nothing invented
    }


async def _kernel_environ(
    api: ApiProcess, kernel_id: str, names: list[str]
) -> dict[str, str | None]:
    socket = await open_socket(api, kernel_id)
    try:
        messages = await socket.run(PROBE.format(names=names))
    finally:
        await socket.close()
    (out,) = [m for m in messages if m["header"]["msg_type"] == "stream"]
    result: dict[str, str | None] = json.loads(out["content"]["text"])
    return result
