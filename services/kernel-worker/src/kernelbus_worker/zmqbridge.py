"""The one module that knows ZMQ: a kernel's sockets, shared by every client of the kernel.

shell, control and stdin are DEALERs; shell and stdin share one identity, because ipykernel
sends `input_request` to the identity that sent the execute_request. iopub is a SUB to
everything. Messages cross as parts after the delimiter and signature:
`[header, parent_header, metadata, content, *buffers]`, signed on the way in.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from kernelbus_worker.zmqframes import (
    DELIMITER,
    EVENTS,
    POLLIN,
    POLLOUT,
    message_parts,
    recv_frames,
    send_frames,
)

REQUEST_CHANNELS = ("shell", "control", "stdin")
_TYPES = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER}
CHANNELS = (*REQUEST_CHANNELS, "iopub")
UNPROBED = ("stdin", "control")
"""Channels the readiness probe (kernel_info on shell, its statuses on iopub) does not prove."""


class LoopSocket:
    """One of a kernel's sockets served from the event loop's reader on its FD, without
    pyzmq's asyncio machinery: a message already waiting is taken at once, without a future,
    and a send that ZMQ takes at once is done without one (bench/zmq_recv.py: ~48 -> ~30 µs
    of CPU per received message under uvloop; ADR 0026, 0028).

    ZMQ's FD is edge-like: it signals changes to the socket's state, and any operation on the
    socket (an EVENTS read, a send, a receive) takes the signal, so a message can be waiting
    with the FD quiet. Hence: a receive checks EVENTS before it waits; after a send (or a
    receive) while someone else waits, EVENTS are read again and whoever they let go on is
    woken (`_check`); `pending` does the same."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._receivers: list[asyncio.Future[None]] = []
        self._senders: list[asyncio.Future[None]] = []
        """Sends waiting for room (ZMQ's high-water mark reached)."""
        self._loop.add_reader(sock.FD, self._check)

    def _check(self) -> int:
        """Read EVENTS (taking the FD's signal) and wake the waits they let go on."""
        events = int(self.sock.getsockopt(EVENTS))
        if events & POLLIN and self._receivers:
            _wake(self._receivers)
        if events & POLLOUT and self._senders:
            _wake(self._senders)
        return events

    async def recv_multipart(self) -> list[bytes]:
        waiting = self._check() & POLLIN
        while True:
            if waiting:
                try:
                    frames = recv_frames(self.sock)
                    break
                except zmq.Again:  # it processed ZMQ's commands: the next message signals
                    pass
            await self._wait(self._receivers)
            waiting = True  # woken by a check that saw a message: no need to read EVENTS again
        if self._senders:
            self._check()  # the receive may have taken the signal of room to send
        return frames

    async def send_multipart(self, frames: list[bytes]) -> None:
        while True:
            try:
                send_frames(self.sock, frames)
                break
            except zmq.Again:
                if not self._check() & POLLOUT:
                    await self._wait(self._senders)
        if self._receivers:
            self._check()  # the send may have taken the signal of a reply now waiting

    def pending(self) -> bool:
        """A message is waiting (a receive waiting for one is woken)."""
        return bool(self._check() & POLLIN)

    async def _wait(self, waits: list[asyncio.Future[None]]) -> None:
        waiter = self._loop.create_future()
        waits.append(waiter)
        try:
            await waiter
        finally:
            if waiter in waits:
                waits.remove(waiter)

    def close(self) -> None:
        if not self.sock.closed:
            self._loop.remove_reader(self.sock.FD)
            self.sock.close(linger=0)
        for waiter in (*self._receivers, *self._senders):
            waiter.cancel()  # as pyzmq cancels a closed socket's pending receive


def _wake(waits: list[asyncio.Future[None]]) -> None:
    for waiter in waits:
        if not waiter.done():
            waiter.set_result(None)
    waits.clear()


class KernelSockets:
    def __init__(
        self, context: zmq.asyncio.Context, info: dict[str, Any], session: Session
    ) -> None:
        self.info = info
        self.session = session
        identity = stable_identity(info)
        self.sockets: dict[str, LoopSocket] = {}
        self._handshakes: dict[str, zmq.asyncio.Socket] = {}
        iopub: zmq.Socket[bytes] = zmq.Socket(context, zmq.SUB)
        iopub.linger = 0
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        iopub.connect(_url(info, "iopub"))
        self.iopub = LoopSocket(iopub)
        for channel in REQUEST_CHANNELS:
            sock: zmq.Socket[bytes] = zmq.Socket(context, _TYPES[channel])
            sock.linger = 0
            if channel in ("shell", "stdin"):
                sock.identity = identity
            if channel in UNPROBED:
                # Before connecting, so that the event cannot be missed.
                monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
                assert isinstance(monitor, zmq.asyncio.Socket)  # made by the asyncio context
                self._handshakes[channel] = monitor
            sock.connect(_url(info, channel))
            self.sockets[channel] = LoopSocket(sock)

    async def handshakes(self, timeout: float) -> list[str]:
        """Until stdin and control completed their ZMQ handshake with the kernel (`timeout`
        for all); returns the channels that did not. The readiness probe proves shell and
        iopub only: a DEALER whose first connect came before the kernel bound its port retries
        after an interval, and until then the kernel's ROUTER drops what it sends there (an
        `input_request` right after a start was lost so, 1 run in ~10)."""
        late = []
        deadline = asyncio.get_running_loop().time() + timeout
        for channel in list(self._handshakes):
            monitor = self._handshakes[channel]
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                await asyncio.wait_for(monitor.recv_multipart(), left)
            except TimeoutError:
                late.append(channel)
            self._stop_monitor(channel)
        return late

    def _stop_monitor(self, channel: str) -> None:
        monitor = self._handshakes.pop(channel, None)
        if monitor is None:
            return
        loop_socket = self.sockets.get(channel)
        if loop_socket is not None and not loop_socket.sock.closed:
            loop_socket.sock.disable_monitor()
        monitor.close(linger=0)

    async def send(self, channel: str, parts: list[bytes]) -> None:
        """Sign the four JSON parts and send them unchanged, buffers after them."""
        signature = self.session.sign(parts[:4])
        await self.sockets[channel].send_multipart([DELIMITER, signature, *parts])

    async def recv(self, channel: str) -> list[bytes]:
        """The next message on `channel` as its parts after the signature."""
        sock = self.iopub if channel == "iopub" else self.sockets[channel]
        while True:
            parts = message_parts(await sock.recv_multipart())
            if parts is not None:
                return parts

    def pending(self, channel: str) -> bool:
        """A message is waiting on `channel` (not yet received)."""
        return (self.iopub if channel == "iopub" else self.sockets[channel]).pending()

    def close(self) -> None:
        for channel in list(self._handshakes):
            self._stop_monitor(channel)
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self.iopub.close()


def stable_identity(info: dict[str, Any]) -> bytes:
    """The same identity for every worker that bridges this kernel (derived from its
    connection key): a reply to a request sent through a worker that crashed meanwhile is
    routed by the kernel to the successor's socket instead of being dropped."""
    key = str(info.get("key", ""))
    if not key:
        return uuid.uuid4().hex.encode()
    return hashlib.sha256(b"kernelbus-identity:" + key.encode()).hexdigest()[:32].encode()


def _url(info: dict[str, Any], channel: str) -> str:
    port = info[f"{channel}_port"]
    transport = info.get("transport", "tcp")
    if transport == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"{transport}://{info['ip']}:{port}"


def new_context() -> zmq.asyncio.Context:
    return zmq.asyncio.Context()
