"""TCP_NODELAY on the api's websocket sockets (PROTOCOLS §2.6).

uvicorn serves through asyncio, whose selector transport sets TCP_NODELAY on every TCP socket
it wraps (`base_events._set_nodelay`); the kernel websocket relies on that rather than setting
it itself (the ASGI scope gives no access to the socket). This checks that the guarantee holds
on this Python, on a real loopback connection.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

pytestmark = pytest.mark.integration


async def test_asyncio_server_transports_set_tcp_nodelay() -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await asyncio.open_connection("127.0.0.1", port)
    writer = await asyncio.wait_for(accepted.get(), 10)
    try:
        sock = writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        writer.close()
        client.close()
        server.close()
        await server.wait_closed()
