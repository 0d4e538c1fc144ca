"""TCP_NODELAY on the sockets the running api accepts (PROTOCOLS §2.6), read from the api
process itself: whatever event loop uvicorn picked there (uvloop when installed, as here).

The api's accepted socket is found through /proc (the connection's inode among the api's file
descriptors), duplicated into this process with pidfd_getfd(2) and asked for TCP_NODELAY.
"""

from __future__ import annotations

import ctypes
import os
import socket
from pathlib import Path

import pytest
from channels_support import kernel_call, open_socket, start_kernel

from kernelbus.testing.plugin import Stack

pytestmark = pytest.mark.integration

_SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 alike


def _event_loop_module(pid: int) -> str:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "uvloop" if "uvloop" in maps else "asyncio"


def _server_inode(pid: int, server_port: int, client_port: int) -> int:
    """Inode of the api's socket whose local port is `server_port`, peer `client_port`."""
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return inode
    raise AssertionError(f"no api socket for peer port {client_port}")


def _fd_of_inode(pid: int, inode: int) -> int:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.name)
        except OSError:
            continue
    raise AssertionError(f"socket inode {inode} is not open in {pid}")


def _steal_fd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copy < 0:
        errno = ctypes.get_errno()
        pytest.skip(f"pidfd_getfd refused here: {os.strerror(errno)}")
    return copy


async def test_the_running_api_sets_tcp_nodelay_on_its_websocket_sockets(stack: Stack) -> None:
    pid = stack.api.service.pid
    api_port = int(stack.api.url.rsplit(":", 1)[1])
    kernel_id = await start_kernel(stack.api)
    sock = await open_socket(stack.api, kernel_id)
    try:
        client_port = sock.ws.local_address[1]
        copy = _steal_fd(pid, _fd_of_inode(pid, _server_inode(pid, api_port, client_port)))
        with socket.socket(fileno=copy) as accepted:
            assert accepted.getpeername()[1] == client_port  # the very socket serving us
            nodelay = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        await sock.close()
        await kernel_call(stack.api, "DELETE", f"/api/kernels/{kernel_id}")
    assert nodelay != 0, f"api ({_event_loop_module(pid)}) accepted a socket without TCP_NODELAY"
    assert _event_loop_module(pid) == "uvloop"  # the loop production runs, not stdlib asyncio
