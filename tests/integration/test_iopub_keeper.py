"""The iopub keeper (ADR 0014): a worker SIGKILLed while its kernel prints loses none of that
output; the successor with its id re-adopts the kernel and delivers, in order, what the kernel
printed while no worker was connected (kept by the keeper), then the live output."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from kernelbus import bus, subjects
from kernelbus.messages import ShutdownKernel, StartKernel
from kernelbus.processes import keepers_under, wait_for
from kernelbus.testing.busclient import BusConnection, Received
from kernelbus.testing.plugin import Services
from kernelbus_worker.keeperclient import KeeperClient

pytestmark = pytest.mark.integration

COUNT = 120
COUNTER = f"import time\nfor i in range({COUNT}):\n    print(i, flush=True)\n    time.sleep(0.1)\n"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def _output(
    conn: BusConnection, msg_id: str, seen: set[str], stop_after: int | None
) -> tuple[str, int]:
    """stdout of request `msg_id` (each message once, by msg_id, as the api delivers it)
    until `stop_after` lines arrived, or until its `idle` status; and how many messages came
    twice (the api drops those)."""
    text, duplicates = "", 0
    while True:
        msg: Received = await conn.next_matching(
            lambda m: m.parent.get("msg_id") == msg_id, timeout=120
        )
        if msg.header["msg_id"] in seen:
            duplicates += 1
            continue
        seen.add(msg.header["msg_id"])
        if msg.msg_type == "stream":
            text += msg.content["text"]
            if stop_after is not None and text.count("\n") >= stop_after:
                return text, duplicates
        if msg.msg_type == "status" and msg.content["execution_state"] == "idle":
            return text, duplicates


async def test_output_printed_while_the_worker_is_dead_reaches_the_client(
    services: Services, nc: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    crashed = services.worker({"KERNELBUS_WORKER_ID": wid})
    command = StartKernel(kernel_id=str(uuid.uuid4()), kernel_name="python3")
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=60)
    assert reply.kernel is not None
    kernel_id = reply.kernel.id
    conn = BusConnection(nc, kernel_id)
    await conn.attach()
    await conn.execute("x = 41")
    msg_id = await conn.send("execute_request", {"code": COUNTER, "silent": False})
    seen: set[str] = set()
    before, _ = await _output(conn, msg_id, seen, stop_after=10)
    assert keepers_under(services.runtime_dir), "the worker started no iopub keeper"
    crashed.kill()
    services.worker({"KERNELBUS_WORKER_ID": wid})
    after, duplicates = await _output(conn, msg_id, seen, stop_after=None)
    values = [int(v) for v in (before + after).split()]
    with capsys.disabled():
        print(f"\n{len(values)} values, {duplicates} duplicates after the worker's SIGKILL")
    assert values == list(range(COUNT)), sorted(set(range(COUNT)) - set(values))
    state = await conn.execute("print(x)")
    assert "".join(m.content["text"] for m in state if m.msg_type == "stream") == "41\n"
    await bus.request(
        nc, subjects.kernel_command(kernel_id), ShutdownKernel(kernel_id=kernel_id), 30
    )


async def test_a_worker_stopping_with_its_kernels_stops_the_keeper(
    services: Services, nc: Client
) -> None:
    wid = f"w-{uuid.uuid4().hex[:8]}"
    worker = services.worker({"KERNELBUS_WORKER_ID": wid})
    command = StartKernel(kernel_id=str(uuid.uuid4()), kernel_name="python3")
    reply = await bus.request(nc, subjects.worker_start(wid), command, timeout=60)
    assert reply.kernel is not None
    wait_for(lambda: bool(keepers_under(services.runtime_dir)), 30, "the keeper")
    assert worker.stop(), "the worker had to be killed"
    wait_for(lambda: not keepers_under(services.runtime_dir), 30, "the keeper to stop")


async def test_a_runtime_dir_too_long_for_a_socket_address_still_gets_a_keeper(
    tmp_path: Path,
) -> None:
    runtime_dir = tmp_path / ("d" * 60) / ("e" * 60)
    client = KeeperClient(runtime_dir, window=5, worker_id="test")
    assert len(str(runtime_dir / "iopub-keeper.sock")) > 108
    try:
        reply = await client.request({"op": "ping"})
        assert reply["ok"] and keepers_under(runtime_dir) == [reply["pid"]]
        bad = await client.request({"op": "nonsense"})
        assert not bad["ok"] and "unknown op" in bad["error"]
    finally:
        await client.stop()
    assert not keepers_under(runtime_dir)


def test_a_keeper_without_kernels_stops_by_itself(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kernelbus_worker.keeper", str(tmp_path), "--idle", "1"]
    keeper = subprocess.Popen(command, start_new_session=True)
    try:
        assert keeper.wait(60) == 0
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
    assert not (tmp_path / "iopub-keeper.sock").exists()
