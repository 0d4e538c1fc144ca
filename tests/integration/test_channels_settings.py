"""Websocket settings seen from a client: allowed message types, server pings."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels_support import execute, kernel_call, open_socket, request, start_kernel, ws_url
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = pytest.mark.integration


async def test_only_allowed_message_types_are_forwarded(services: Services) -> None:
    services.worker()
    api = services.api(env={"KERNELBUS_ALLOWED_MESSAGE_TYPES": "kernel_info_request"})
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id)
    try:
        refused = await sock.send(execute("1+1"))
        await sock.send(request("kernel_info_request", {}))
        seen = await sock.until(lambda m: m["header"]["msg_type"] == "kernel_info_reply")
    finally:
        await sock.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")
    # Shell is handled in order: a forwarded execute would have replied before kernel_info.
    assert all(m["parent_header"].get("msg_id") != refused for m in seen)


async def server_pings(api: ApiProcess, kernel_id: str, wanted: int) -> int:
    """Speak websocket by hand (sans-io) to see the server's ping frames; answer them."""
    protocol = ClientProtocol(parse_uri(ws_url(api, kernel_id)))
    handshake = protocol.connect()
    handshake.headers.update(api.headers)
    protocol.send_request(handshake)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(api.url.rsplit(":", 1)[1]))
    pings = 0
    deadline = time.monotonic() + 30
    try:
        while pings < wanted and time.monotonic() < deadline:
            writer.write(b"".join(protocol.data_to_send()))
            data = await asyncio.wait_for(reader.read(65536), 30)
            protocol.receive_data(data)
            events = protocol.events_received()
            pings += sum(isinstance(e, Frame) and e.opcode == Opcode.PING for e in events)
    finally:
        writer.close()
    return pings


async def test_server_pings_at_the_configured_interval(services: Services) -> None:
    services.worker()
    api = services.api(env={"KERNELBUS_WS_PING_INTERVAL": "0.5"})
    kernel_id = await start_kernel(api)
    try:
        assert await server_pings(api, kernel_id, wanted=2) == 2
    finally:
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")


async def test_tracebacks_can_be_hidden(services: Services) -> None:
    services.worker()
    api = services.api(
        env={
            "KERNELBUS_ALLOW_TRACEBACKS": "false",
            "KERNELBUS_TRACEBACK_REPLACEMENT_MESSAGE": "nope",
        }
    )
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id)
    try:
        seen = await sock.run("1/0")
    finally:
        await sock.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")
    error = next(m for m in seen if m["header"]["msg_type"] == "error")
    assert error["content"] == {
        "ename": "ExecutionError",
        "evalue": "Execution error",
        "traceback": ["nope"],
    }


COMM_WITH_BUFFERS = """
from ipykernel.comm import Comm
Comm(target_name='kb-test', data={}).send(data={'k': 1}, buffers=[b'\\\\x00\\\\x01'])
"""


@pytest.mark.parametrize("user_agent", ["Tornado/6.5", "python-websockets"])
async def test_buffers_dropped_only_for_tornado_clients_when_asked(
    services: Services, user_agent: str
) -> None:
    services.worker()
    api = services.api(env={"KERNELBUS_DROP_BUFFERS_FOR_TORNADO_CLIENTS": "true"})
    kernel_id = await start_kernel(api)
    sock = await open_socket(api, kernel_id, user_agent=user_agent)
    try:
        await sock.run(COMM_WITH_BUFFERS)
    finally:
        await sock.close()
        await kernel_call(api, "DELETE", f"/api/kernels/{kernel_id}")
    comm_frames = [f for f in sock.raw_frames if b"comm_msg" in _bytes(f)]
    assert len(comm_frames) == 1
    assert isinstance(comm_frames[0], str) == (user_agent.startswith("Tornado/"))


def _bytes(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()
