"""A client message sent while the kernel's worker is gone (crashed and restarting, or
reconnecting to another node) is not lost: NATS says no worker received it, the api holds it
and sends it again once the successor has re-adopted the kernel (`channels/undelivered.py`)."""

from __future__ import annotations

import uuid

import nats
import pytest
from channels_support import execute, kernel_call, open_socket, start_kernel

from kernelbus import bus, natsserver, subjects
from kernelbus.testing.plugin import Services
from kernelbus.testing.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_a_message_sent_while_the_worker_is_gone_is_answered_by_its_successor(
    services: Services, fresh_nats: natsserver.NatsServer
) -> None:
    env = {"KERNELBUS_WORKER_ID": f"w-{uuid.uuid4().hex[:8]}"}
    crashed = services.worker(env, fresh_nats.url)
    api = services.api(nats_url=fresh_nats.url)
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id)
    nc = await nats.connect(fresh_nats.url)
    try:
        await sock.run("x = 41")
        crashed.kill()  # the kernel lives on (its own session) for a successor to adopt

        async def worker_gone() -> bool:
            return (
                await bus.ping(nc, subjects.kernel_command(kernel_id), 2, on_timeout=True) is False
            )

        await until(worker_gone, timeout=30, what="the worker's subscriptions gone from NATS")
        msg_id = await sock.send(execute("print(x + 1)"))
        services.worker(env, fresh_nats.url)
        seen = await sock.until_finished(msg_id, timeout=90)
        printed = [m["content"]["text"] for m in seen if m["header"]["msg_type"] == "stream"]
        assert printed == ["42\n"]
        assert "reached no worker; held until one answers" in api.service.log()
    finally:
        await nc.close()
        await sock.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")
