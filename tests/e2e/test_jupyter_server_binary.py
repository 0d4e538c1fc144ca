"""Binary websocket frames through jupyter_server's gateway mode with kernelbus_jupyter's relay
(`--ServerApp.kernel_websocket_connection_class=kernelbus_jupyter.BinaryGatewayWebSocketConnection`):
comm messages whose state carries buffers, as ipywidgets sends them, reach the client and go
back to the kernel, also after the client reconnects and after the relay itself reconnects to
a new api replica. The stock relay decodes every frame as text and dies on the first of them
(tested too, so that the reason for the package stays visible)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    serialize_binary_message,
)
from test_jupyter_server_gateway import (
    RECEIVE_TIMEOUT,
    Channels,
    Gateway,
    _open_channels,
    _start_gateway,
    _start_new_api,
)

from kernelbus.processes import wait_for
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.e2e

Message = dict[str, Any]
RELAY = "kernelbus_jupyter.BinaryGatewayWebSocketConnection"
RELAY_OPTION = f"--ServerApp.kernel_websocket_connection_class={RELAY}"
# A PNG header and every byte value, twice: not valid UTF-8, as an ipywidgets Image's value.
PAYLOAD = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2

# The kernel side of a widget: a comm opened by the kernel with its state in a buffer, and a
# target that answers every client comm_msg with the buffers it carried (as a widget model
# syncing state back).
ECHO_TARGET = """
def _kb_echo(comm, open_msg):
    @comm.on_msg
    def _echo(msg):
        comm.send({"echo": msg["content"]["data"]}, buffers=msg["buffers"])

get_ipython().kernel.comm_manager.register_target("kb.echo", _kb_echo)
"""


@dataclass
class BinaryChannels(Channels):
    """The legacy protocol as JupyterLab speaks it: text frames, and binary frames for
    messages with buffers (offsets table, JSON, buffers)."""

    async def receive(self) -> Message:
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                frame = await self.ws.recv()
        except TimeoutError:
            raise AssertionError(f"no message for {RECEIVE_TIMEOUT} s\n{self.logs()}") from None
        if isinstance(frame, bytes):
            msg: Message = deserialize_binary_message(frame)
            msg["binary_frame"] = True
            return msg
        msg = json.loads(frame)
        msg["binary_frame"] = False
        return msg

    async def send_binary(self, msg_type: str, content: Message, buffers: list[bytes]) -> str:
        msg = self.message(msg_type, content)
        msg["buffers"] = buffers
        await self.ws.send(serialize_binary_message(msg))
        return str(msg["header"]["msg_id"])

    async def until_idle(self, parent_id: str) -> None:
        while True:
            msg = await self.receive()
            if (
                msg["parent_header"].get("msg_id") == parent_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return

    async def next_comm_msg(self, comm_id: str) -> Message:
        while True:
            msg = await self.receive()
            if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
                return msg

    async def echo(self, comm_id: str, tag: str, payload: bytes) -> Message:
        """Send `payload` as a comm_msg buffer; the kernel's answer (with the same buffer)."""
        content = {"comm_id": comm_id, "data": {"method": "update", "tag": tag}}
        await self.send_binary("comm_msg", content, [payload])
        while True:
            reply = await self.next_comm_msg(comm_id)
            if reply["content"]["data"]["echo"]["tag"] == tag:
                return reply


@pytest.fixture(scope="module")
def binary_gateway(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("js-binary")
    services = Services(tmp, nats_url)
    try:
        yield _start_gateway(services, tmp, (RELAY_OPTION,))
    finally:
        services.stop_all()


@pytest.fixture
async def kernel(binary_gateway: Gateway) -> AsyncIterator[str]:
    async with binary_gateway.client() as client:
        response = await client.post("/api/kernels", json={"name": "python3"})
        assert response.status_code == 201, response.text
        kernel_id = str(response.json()["id"])
        try:
            yield kernel_id
        finally:
            await client.delete(f"/api/kernels/{kernel_id}")


async def _connect(gateway: Gateway, kernel_id: str) -> BinaryChannels:
    return BinaryChannels(await _open_channels(gateway, kernel_id), gateway.logs)


async def _open_echo_comm(channels: BinaryChannels) -> str:
    """Register the echo target in the kernel and open a comm to it from the client."""
    assert _reply_status(await channels.run(ECHO_TARGET)) == "ok"
    comm_id = uuid.uuid4().hex
    msg_id = await channels.send(
        "comm_open", {"comm_id": comm_id, "target_name": "kb.echo", "data": {}}
    )
    await channels.until_idle(msg_id)
    return comm_id


def _reply_status(messages: list[Message]) -> str:
    (reply,) = [m for m in messages if m["msg_type"] == "execute_reply"]
    return str(reply["content"]["status"])


async def test_a_comm_with_buffers_reaches_the_client_and_the_cell_completes(
    binary_gateway: Gateway, kernel: str
) -> None:
    """The kernel opens a comm whose state is a binary buffer (an ipywidgets Image's value) in
    the middle of a cell: the buffer arrives intact in a binary frame, and the cell's output
    before and after it and its reply arrive too (with the stock relay nothing does)."""
    channels = await _connect(binary_gateway, kernel)
    try:
        code = (
            "from comm import create_comm\n"
            "print('before the widget', flush=True)\n"
            "state = {'state': {'value': None}, 'buffer_paths': [['value']]}\n"
            f"image = create_comm(target_name='kb.image', data=state, buffers=[{PAYLOAD!r}])\n"
            "print('after the widget')\n"
        )
        seen = await channels.run(code)
        (opened,) = [m for m in seen if m["msg_type"] == "comm_open"]
        assert opened["binary_frame"] is True
        assert opened["content"]["target_name"] == "kb.image"
        assert opened["content"]["data"]["buffer_paths"] == [["value"]]
        assert opened["buffers"] == [PAYLOAD]
        texts = "".join(m["content"]["text"] for m in seen if m["msg_type"] == "stream")
        assert texts == "before the widget\nafter the widget\n"
        assert _reply_status(seen) == "ok"
        # Later cells still get their replies.
        assert _reply_status(await channels.run("1 + 1")) == "ok"
    finally:
        await channels.ws.close()


async def test_client_buffers_reach_the_kernel_and_back_also_after_a_reconnect(
    binary_gateway: Gateway, kernel: str
) -> None:
    """A client comm_msg with a buffer (a widget syncing its state) goes to the kernel as a
    binary frame and the kernel's answer comes back as one; after the browser reconnects (page
    reload, "Reconnect to Kernel") the same comm still works both ways."""
    first = await _connect(binary_gateway, kernel)
    try:
        comm_id = await _open_echo_comm(first)
        reply = await first.echo(comm_id, "first", PAYLOAD)
        assert reply["binary_frame"] is True
        assert reply["buffers"] == [PAYLOAD]
    finally:
        await first.ws.close()

    second = await _connect(binary_gateway, kernel)
    try:
        big = PAYLOAD * 4096  # ~2 MiB: larger than one NATS message, as a real image
        reply = await second.echo(comm_id, "after reconnect", big)
        assert reply["buffers"] == [big]
        assert _reply_status(await second.run("print('still here')")) == "ok"
    finally:
        await second.ws.close()


@pytest.fixture
def private_binary_gateway(services: Services, tmp_path: Path) -> Gateway:
    return _start_gateway(services, tmp_path, (RELAY_OPTION,))


async def test_the_relay_reconnects_to_a_new_api_and_delivers_held_client_frames(
    private_binary_gateway: Gateway, services: Services
) -> None:
    """The api replica behind jupyter_server goes away: the relay reconnects (same session),
    and a binary frame the client sent while no api was up reaches the kernel afterwards."""
    gateway = private_binary_gateway
    async with gateway.client() as client:
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
    channels = await _connect(gateway, kernel_id)
    try:
        comm_id = await _open_echo_comm(channels)
        gateway.api.service.stop()
        # Our relay logs this once it has seen the api's socket close.
        lost = "Lost connection to the gateway"
        await asyncio.to_thread(wait_for, lambda: lost in gateway.server.log(), 60, "relay")
        content = {"comm_id": comm_id, "data": {"method": "update", "tag": "held"}}
        await channels.send_binary("comm_msg", content, [PAYLOAD])
        await asyncio.to_thread(_start_new_api, gateway, services)
        reply = await channels.next_comm_msg(comm_id)
        assert reply["content"]["data"]["echo"]["tag"] == "held"
        assert reply["buffers"] == [PAYLOAD]
    finally:
        await channels.ws.close()


@pytest.fixture
def stock_gateway(services: Services, tmp_path: Path) -> Gateway:
    return _start_gateway(services, tmp_path)


async def test_the_stock_relay_loses_everything_after_a_binary_frame(
    stock_gateway: Gateway,
) -> None:
    """Why the package exists: jupyter_server's own relay decodes a binary frame as UTF-8 and
    its read loop ends; the browser gets nothing more (jupyter_server 2.x)."""
    async with stock_gateway.client() as client:
        started = await client.post("/api/kernels", json={"name": "python3"})
        assert started.status_code == 201, started.text
        kernel_id = started.json()["id"]
    channels = await _connect(stock_gateway, kernel_id)
    try:
        code = (
            f"from comm import create_comm\ncreate_comm(target_name='x', buffers=[{PAYLOAD!r}])\n"
        )
        await channels.execute(code)
        log = stock_gateway.server.log
        await asyncio.to_thread(wait_for, lambda: "UnicodeDecodeError" in log(), 60, "stock relay")
    finally:
        await channels.ws.close()
