"""Automatic restarts as Jupyter clients expect them (PROTOCOLS §2, jupyter_client's
KernelRestarter): a kernel that crashes again and again, and clients that reconnect at once."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable

import pytest
from channels_support import (
    KernelSocket,
    Msg,
    execute,
    kernel_call,
    open_socket,
    request,
    start_kernel,
)
from websockets.exceptions import InvalidStatus

from kernelbus import natsserver
from kernelbus.processes import pid_stopped, wait_for
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

# KERNELBUS_WORKER_STABLE_START_TIME in this test: long enough that two crashes in a row are
# never STABLE seconds apart, even when a loaded machine makes each restart take seconds.
STABLE = 15.0
# The kernel sends its output before it exits (flush, then a moment for its ZMQ io thread).
CRASH = (
    "import os, sys, time\nfor i in range(300): print(i)\n"
    "sys.stdout.flush()\ntime.sleep(0.3)\nos._exit(3)\n"
)


def _status(state: str) -> Callable[[Msg], bool]:
    def match(msg: Msg) -> bool:
        return bool(
            msg["header"]["msg_type"] == "status"
            and msg["content"]["execution_state"] == state
            and msg["parent_header"] == {}
        )

    return match


def _reply_to(msg_id: str) -> Callable[[Msg], bool]:
    return lambda m: (
        m["parent_header"].get("msg_id") == msg_id and m["header"]["msg_type"].endswith("_reply")
    )


async def _crash(sock: KernelSocket) -> list[Msg]:
    """Make the kernel exit on its own; everything the socket got up to `restarting`/`dead`."""
    await sock.send(execute(CRASH))
    restarting, dead = _status("restarting"), _status("dead")
    return await sock.until(lambda m: restarting(m) or dead(m))


async def _kernel_info(sock: KernelSocket) -> Msg:
    msg_id = await sock.send(request("kernel_info_request", {}))
    return (await sock.until(_reply_to(msg_id)))[-1]


def _resets(worker_log: Callable[[], str]) -> int:
    return worker_log().count("restart count reset")


async def test_a_kernel_that_crashes_repeatedly_and_clients_that_reconnect_at_once(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    # A bus of its own: on the shared one the kernel may be placed on another test's worker,
    # whose restart settings are not these (seen once in a clean-clone CI run).
    worker = services.worker(
        {
            "KERNELBUS_WORKER_POLL_INTERVAL": "0.2",
            "KERNELBUS_WORKER_RESTART_LIMIT": "2",
            "KERNELBUS_WORKER_STABLE_START_TIME": str(STABLE),
        },
        nats_url=fresh_nats.url,
    )
    api: ApiProcess = services.api(nats_url=fresh_nats.url)
    kernel_id = await start_kernel(api)
    session = uuid.uuid4().hex
    first = await open_socket(api, kernel_id, session_id=session)
    await first.run("pass")

    # 1st crash. What the kernel printed arrives before `restarting`.
    seen = await _crash(first)
    assert _status("restarting")(seen[-1])
    printed = "".join(m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream")
    assert printed == "".join(f"{i}\n" for i in range(300))

    # At once, as JupyterLab: the old socket asks for kernel_info (the request is held during
    # the restart and reaches the new kernel), and a new socket of another page connects (its
    # handshake waits for the restart instead of connecting to a kernel that is not there).
    info_on_old = asyncio.create_task(_kernel_info(first))
    second = await open_socket(api, kernel_id, session_id=uuid.uuid4().hex)
    # The handshake returned only once the restart was over.
    model = (await kernel_call(api, "GET", f"/api/kernels/{kernel_id}")).json()
    assert model["execution_state"] != "restarting", model
    reply = await _kernel_info(second)
    assert reply["content"]["status"] == "ok"
    assert (await info_on_old)["content"]["status"] == "ok"
    await second.close()

    # The count of automatic restarts starts again once the kernel stayed up STABLE seconds.
    await asyncio.to_thread(
        wait_for, lambda: _resets(worker.log) == 1, 60, "the restart count reset", worker
    )
    assert _status("restarting")((await _crash(first))[-1])  # count 1 of 2
    await _kernel_info(first)
    assert _status("restarting")((await _crash(first))[-1])  # count 2 of 2: no reset between
    await _kernel_info(first)
    assert _resets(worker.log) == 1
    # The third crash in a row is beyond the limit: the kernel is declared dead.
    assert _status("dead")((await _crash(first))[-1])
    await first.close()
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(api, kernel_id, session_id=session)
    assert refused.value.response.status_code == 500


WRITE_FAILED = "could not write the kernel's record"
FREEZE = 30.0


async def test_the_watch_outlives_registry_writes_that_time_out(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    """On a loaded machine a JetStream write can take longer than its timeout. The registry
    writes around an automatic restart once raised out of the kernel's watch, which ended
    without a trace: the restart count never reset (the CI failure of the test above) and the
    next crash was never noticed. Here NATS is frozen (SIGSTOP) across a restart."""
    env = {
        "KERNELBUS_WORKER_POLL_INTERVAL": "0.2",
        "KERNELBUS_WORKER_RESTART_LIMIT": "2",
        "KERNELBUS_WORKER_STABLE_START_TIME": "2",
    }
    worker = services.worker(env, nats_url=fresh_nats.url)
    api = services.api(nats_url=fresh_nats.url)
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id)
    await sock.run("pass")
    await sock.send(execute(CRASH))
    await sock.until(_status("restarting"))
    pid = fresh_nats.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.to_thread(wait_for, lambda: pid_stopped(pid), 30, "the stop")
        # Until the worker says a write failed; a worker that does not say so (before the
        # fix) is given FREEZE seconds, well beyond a restart and a write's 5 s timeout.
        deadline = asyncio.get_running_loop().time() + FREEZE
        while WRITE_FAILED not in worker.log():
            assert worker.alive(), worker.log()
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        os.kill(fresh_nats.process.pid, signal.SIGCONT)
    # The kernel came back, its count reset once it stayed up, and the next crash is noticed.
    assert (await _kernel_info(sock))["content"]["status"] == "ok"
    await asyncio.to_thread(
        wait_for, lambda: _resets(worker.log) == 1, 60, "the restart count reset", worker
    )
    assert _status("restarting")((await _crash(sock))[-1])
    assert (await _kernel_info(sock))["content"]["status"] == "ok"
    # The registry shows the kernel idle again.
    async with asyncio.timeout(60):
        while True:
            model = (await kernel_call(api, "GET", f"/api/kernels/{kernel_id}")).json()
            if model["execution_state"] == "idle":
                break
            await asyncio.sleep(0.1)
    await sock.close()
