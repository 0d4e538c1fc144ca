"""Socket options of another process's TCP sockets, read from that process itself (tests):
its connections through /proc (`net/tcp*` of its network namespace, so also a container's
process seen from the host), each socket's fd among its file descriptors, and a duplicate of
that fd in this process by pidfd_getfd(2) (root, or ptrace rights over the process)."""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

_SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 alike
_ESTABLISHED = "01"


class CannotInspect(Exception):
    """pidfd_getfd is refused here (no rights, or a kernel without it)."""


@dataclass(frozen=True)
class Connection:
    local_port: int
    peer_port: int
    inode: int


def connections(pid: int, local_port: int) -> list[Connection]:
    """The established TCP connections of `pid`'s network namespace on `local_port`."""
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            port = int(local.rsplit(":", 1)[1], 16)
            if port == local_port and state == _ESTABLISHED and inode:
                found.append(Connection(port, int(remote.rsplit(":", 1)[1], 16), inode))
    return found


def fd_of_inode(pid: int, inode: int) -> int | None:
    """The fd under which `pid` holds socket `inode`, or None (another process's socket)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == f"socket:[{inode}]":
                return int(fd.name)
        except OSError:
            continue
    return None


def borrowed_socket(pid: int, fd: int) -> socket.socket:
    """`pid`'s socket `fd`, duplicated into this process (close it when done)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if copy < 0:
        raise CannotInspect(f"pidfd_getfd refused here: {os.strerror(ctypes.get_errno())}")
    return socket.socket(fileno=copy)


def nodelay_of_accepted(pid: int, local_port: int) -> dict[int, bool]:
    """peer port -> TCP_NODELAY, for every established connection `pid` or one of its
    descendants (a container's init runs the server as its child) holds on `local_port`
    (the sockets it accepted there)."""
    owners = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    found = {}
    for conn in connections(pid, local_port):
        held = ((owner, fd_of_inode(owner, conn.inode)) for owner in owners)
        owner, fd = next(((o, f) for o, f in held if f is not None), (pid, None))
        if fd is None:
            continue
        with borrowed_socket(owner, fd) as accepted:
            found[conn.peer_port] = bool(
                accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            )
    return found
