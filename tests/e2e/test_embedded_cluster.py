"""`kernelbus run` with KERNELBUS_NATS_NODES=3 and KERNELBUS_WORKERS=2: a local 3-node
JetStream cluster and two workers with their own ids and runtime dirs; kernels land on both
workers; one NATS node killed with SIGKILL while a client executes loses no kernel, and REST
and the websocket carry on (recovery times printed, recorded in bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from websockets.asyncio.client import connect

from kernelbus.natsserver import free_port
from kernelbus.registry import Registry
from kernelbus.testing.reaper import command_line, descendants, kill_tree
from kernelbus_worker.sim.provisioner import SPEC_NAME, write_kernelspec

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str, Path]]:
    port = free_port()
    token = "cluster-token"
    write_kernelspec(tmp_path / "jupyter")
    env = {
        **os.environ,
        "KERNELBUS_PORT": str(port),
        "KERNELBUS_AUTH_TOKEN": token,
        "KERNELBUS_DATA_DIR": str(tmp_path / "data"),
        "KERNELBUS_EVENTS_PORT": str(free_port()),
        "KERNELBUS_NATS_NODES": "3",
        "KERNELBUS_WORKERS": "2",
        "KERNELBUS_WORKER_POOL": "",
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
    }
    env.pop("KERNELBUS_WORKER_ID", None)
    out = tmp_path / "out.txt"
    with open(out, "w") as handle:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "kernelbus"), "run"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", token, out
    finally:
        left = descendants(process.pid)
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_tree(left)


async def _execute(ws: object, code: str, timeout: float) -> bool:
    import json
    import uuid

    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": "t",
        "session": "s",
        "version": "5.3",
        "date": "2026-01-01T00:00:00Z",
    }
    msg = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell"}
    await ws.send(json.dumps({**msg, "content": {"code": code}, "buffers": []}))  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())  # type: ignore[attr-defined]
        except TimeoutError:
            return False
        reply = json.loads(frame)
        if (
            reply["parent_header"].get("msg_id") == msg_id
            and reply["header"]["msg_type"] == "execute_result"
        ):
            return True
    return False


async def test_three_nodes_two_workers_survive_a_node_kill(
    cluster_run: tuple[subprocess.Popen[str], str, str, Path],
) -> None:
    process, url, token, out = cluster_run
    deadline = time.monotonic() + 120
    while "Kernelbus is running" not in out.read_text():
        assert process.poll() is None, out.read_text()
        assert time.monotonic() < deadline, out.read_text()
        await asyncio.sleep(0.2)
    banner = out.read_text()
    nats_urls = re.search(r"nats:\s+(\S+)", banner)
    assert nats_urls is not None and len(nats_urls.group(1).split(",")) == 3
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        # The embedded bus has no anonymous access: read the registry as the api does.
        passwords = json.loads((out.parent / "data" / "nats" / "credentials.json").read_text())
        nc = await nats.connect(
            servers=nats_urls.group(1).split(","),
            user="api",
            password=passwords["api"],
            inbox_prefix="_INBOX_api",
        )
        try:
            registry = await Registry.open(nc.jetstream())

            async def live_load() -> dict[str, int]:
                return {w.worker_id: w.running_kernels for w in await registry.live_workers()}

            async def until(condition: object) -> dict[str, int]:
                end = time.monotonic() + 60
                while True:
                    load = await live_load()
                    if condition(load):  # type: ignore[operator]
                        return load
                    assert time.monotonic() < end, load
                    await asyncio.sleep(0.2)

            await until(lambda load: set(load) == {"local-1", "local-2"})
            ids: list[str] = []
            for count in range(1, 5):
                started = await http.post("/api/kernels", json={"name": SPEC_NAME})
                assert started.status_code == 201, started.text
                ids.append(started.json()["id"])
                # Placement reads the heartbeats: let them count this kernel before the next.
                await until(lambda load, n=count: sum(load.values()) == n)
            owners = {r.id: r.worker_id for r in await registry.list_kernels()}
        finally:
            await nc.close()
        assert set(ids) <= set(owners)
        assert sorted(owners[k] for k in ids) == ["local-1", "local-1", "local-2", "local-2"]

        ws_url = url.replace("http", "ws", 1) + f"/api/kernels/{ids[0]}/channels"
        async with connect(ws_url, additional_headers=headers) as ws:
            assert await _execute(ws, "6 * 7", 30)
            victims = [
                pid
                for pid in descendants(process.pid)
                if "nats-server" in command_line(pid) and "nats-2" in command_line(pid)
            ]
            assert len(victims) == 1, [command_line(p) for p in descendants(process.pid)]
            killed_at = time.monotonic()
            os.kill(victims[0], signal.SIGKILL)
            rest_back = ws_back = None
            deadline = killed_at + 60
            while rest_back is None or ws_back is None:
                assert time.monotonic() < deadline, "no recovery within 60 s"
                if ws_back is None and await _execute(ws, "1 + 1", 2):
                    ws_back = time.monotonic() - killed_at
                if rest_back is None:
                    try:
                        listed = await http.get("/api/kernels", timeout=2)
                        if listed.status_code == 200:
                            assert set(ids) <= {k["id"] for k in listed.json()}
                            rest_back = time.monotonic() - killed_at
                    except httpx.HTTPError:
                        pass
                await asyncio.sleep(0.05)
            print(
                f"\nkernelbus run, one of 3 NATS nodes killed: REST {rest_back:.2f} s, "
                f"websocket execute {ws_back:.2f} s"
            )
        # Writes (a delete removes the registry record) wait for the stream leader's
        # re-election if the killed node led it (4-10 s measured); meanwhile they answer 503.
        for kernel_id in ids:
            failed = False
            while (deleted := await http.delete(f"/api/kernels/{kernel_id}")).status_code != 204:
                if failed and deleted.status_code == 404:
                    break  # a failed attempt had removed it after all
                failed = True
                assert time.monotonic() < deadline, deleted.text
                await asyncio.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(60) == 0, out.read_text()[-3000:]
