"""What a client says about itself that Kernelbus believes only when told to: the notebook
directory in KERNEL_WORKING_DIR (KERNELBUS_WORKER_USE_KERNEL_WORKING_DIR) and the public host a
reverse proxy forwards in X-Forwarded-Host (KERNELBUS_TRUSTED_PROXIES)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from channels_support import open_socket, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration


async def _cwd_of_kernel(api: ApiProcess, working_dir: Path) -> str:
    body = {"name": "python3", "env": {"KERNEL_WORKING_DIR": str(working_dir)}}
    async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as client:
        started = await client.post("/api/kernels", json=body)
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
        sock = await open_socket(api, kernel_id)
        try:
            seen = await sock.run("import os; print(os.getcwd())")
        finally:
            await sock.close()
            await client.delete(f"/api/kernels/{kernel_id}")
    (stream,) = [m for m in seen if m["header"]["msg_type"] == "stream"]
    return str(stream["content"]["text"]).strip()


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "opted-in"])
async def test_kernel_working_dir_is_used_only_when_opted_in(
    services: Services, tmp_path: Path, opt_in: bool
) -> None:
    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()
    env = {"KERNELBUS_WORKER_USE_KERNEL_WORKING_DIR": "true"} if opt_in else {}
    services.worker(env)
    cwd = await _cwd_of_kernel(services.api(), notebook_dir)
    assert (cwd == str(notebook_dir)) is opt_in, cwd


PUBLIC = "https://notebooks.example.org"
PROXIED = {"Origin": PUBLIC, "X-Forwarded-Host": "notebooks.example.org"}


async def test_forwarded_host_is_trusted_only_from_a_trusted_proxy(services: Services) -> None:
    services.worker()
    plain = services.api()
    proxied = services.api({"KERNELBUS_TRUSTED_PROXIES": "127.0.0.1"})
    for api, allowed in ((plain, False), (proxied, True)):
        async with httpx.AsyncClient(base_url=api.url, headers=api.headers, timeout=60) as client:
            listed = await client.get("/api/kernels", headers=PROXIED)
            assert listed.status_code == (200 if allowed else 403), listed.text
            # Any other origin stays refused behind the proxy too.
            other = {**PROXIED, "Origin": "https://evil.example.com"}
            assert (await client.get("/api/kernels", headers=other)).status_code == 403
            started = await client.post("/api/kernels", json={"name": "python3"})
            assert started.status_code == 201, started.text
            kernel_id = started.json()["id"]
            try:
                headers = {**api.headers, **PROXIED}
                if allowed:
                    async with connect(ws_url(api, kernel_id), additional_headers=headers):
                        pass
                else:
                    with pytest.raises(InvalidStatus) as refused:
                        async with connect(ws_url(api, kernel_id), additional_headers=headers):
                            pass
                    assert refused.value.response.status_code == 403
            finally:
                await client.delete(f"/api/kernels/{kernel_id}")
