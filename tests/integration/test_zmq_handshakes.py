"""The bridge's stdin and control sockets are known to the kernel before a start is ready.

A DEALER whose first connect comes before the kernel bound its port retries after ZMQ's
reconnect interval; until then the kernel's ROUTER cannot route to it, and an `input_request`
sent meanwhile was dropped (`test_input_goes_through_stdin` failed 2 of 12 runs).
`KernelSockets.handshakes` waits for both handshakes. Real ZMQ sockets on loopback, the
kernel's side played by ROUTERs bound only after the bridge first tried to connect; the
ROUTERs refuse to drop (ROUTER_MANDATORY), so a send to a peer not yet known raises.
"""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from kernelbus.natsserver import free_port
from kernelbus_worker.zmqbridge import CHANNELS, KernelSockets, stable_identity

pytestmark = pytest.mark.integration


async def test_stdin_and_control_are_routable_once_the_handshakes_came() -> None:
    info: dict[str, object] = {f"{c}_port": free_port() for c in (*CHANNELS, "hb")}
    info |= {"ip": "127.0.0.1", "transport": "tcp", "key": "k", "signature_scheme": "hmac-sha256"}
    context = zmq.asyncio.Context()
    bridge = KernelSockets(context, info, Session(key=b"k"))
    routers = {}
    try:
        await asyncio.sleep(0.3)  # the bridge's first connects are refused: nothing listens
        for channel in ("stdin", "control"):
            router = context.socket(zmq.ROUTER)
            router.linger = 0
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.bind(f"tcp://127.0.0.1:{info[f'{channel}_port']}")
            routers[channel] = router
        assert await bridge.handshakes(10) == []
        identity = stable_identity(info)
        # Routable at once: before the handshake this raised EHOSTUNREACH (ZMQ drops it
        # silently without ROUTER_MANDATORY, as the kernel's socket does).
        await routers["stdin"].send_multipart([identity, b"input_request"])
        assert await asyncio.wait_for(bridge.sockets["stdin"].recv_multipart(), 5) == [
            b"input_request"
        ]
    finally:
        bridge.close()
        for router in routers.values():
            router.close(linger=0)
        context.term()
