"""TCP_NODELAY on the sockets the running api accepts (PROTOCOLS §2.6), read from the api
process itself: whatever event loop uvicorn picked there (uvloop when installed, as here).

The api's accepted socket is found through /proc and duplicated into this process with
pidfd_getfd(2) (`kernelbus.testing.sockets`); the compose image's api is checked the same way
in tests/e2e/test_compose.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from channels_support import kernel_call, open_socket, start_kernel

from kernelbus.testing.plugin import Stack
from kernelbus.testing.sockets import CannotInspect, nodelay_of_accepted

pytestmark = pytest.mark.integration


def _event_loop_module(pid: int) -> str:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "uvloop" if "uvloop" in maps else "asyncio"


async def test_the_running_api_sets_tcp_nodelay_on_its_websocket_sockets(stack: Stack) -> None:
    pid = stack.api.service.pid
    api_port = int(stack.api.url.rsplit(":", 1)[1])
    kernel_id = await start_kernel(stack.api)
    sock = await open_socket(stack.api, kernel_id)
    try:
        client_port = sock.ws.local_address[1]
        try:
            accepted = nodelay_of_accepted(pid, api_port)
        except CannotInspect as exc:
            pytest.skip(str(exc))
    finally:
        await sock.close()
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
    assert client_port in accepted, f"the api holds no socket for peer port {client_port}"
    nodelay = accepted[client_port]  # the very socket serving us
    assert nodelay, f"api ({_event_loop_module(pid)}) accepted a socket without TCP_NODELAY"
    assert _event_loop_module(pid) == "uvloop"  # the loop production runs, not stdlib asyncio
