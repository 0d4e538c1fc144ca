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

from kernelbus_worker.zmqframes import DELIMITER, message_parts

REQUEST_CHANNELS = ("shell", "control", "stdin")
_TYPES = {"shell": zmq.DEALER, "control": zmq.DEALER, "stdin": zmq.DEALER}
CHANNELS = (*REQUEST_CHANNELS, "iopub")
UNPROBED = ("stdin", "control")
"""Channels the readiness probe (kernel_info on shell, its statuses on iopub) does not prove."""


class LoopSub:
    """A SUB socket received without pyzmq's asyncio machinery: the loop's reader on its FD
    wakes the one waiting `recv_multipart`, and a message already waiting is taken at once,
    without a future (bench/zmq_recv.py: ~48 -> ~30 µs of CPU per message under uvloop).

    ZMQ's FD is edge-like: it signals changes to the socket's state, which any EVENTS read
    consumes, so a message can be waiting with the FD quiet. Hence the check of EVENTS
    before every wait, and `pending` wakes the waiter when its own check found one."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._loop.add_reader(sock.FD, self._readable)

    def _readable(self) -> None:
        # Reading EVENTS takes the signal off the FD: a reader still registered on a FD
        # that stays readable while nobody waits would otherwise run on every loop turn.
        self.sock.getsockopt(zmq.EVENTS)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv_multipart(self) -> list[bytes]:
        while True:
            if int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return self.sock.recv_multipart(zmq.NOBLOCK)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def pending(self) -> bool:
        waiting = bool(int(self.sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
        if waiting:
            self._wake()
        return waiting

    def close(self) -> None:
        if not self.sock.closed:
            self._loop.remove_reader(self.sock.FD)
            self.sock.close(linger=0)
        if self._waiter is not None:
            self._waiter.cancel()  # as pyzmq cancels a closed socket's pending receive


class KernelSockets:
    def __init__(
        self, context: zmq.asyncio.Context, info: dict[str, Any], session: Session
    ) -> None:
        self.info = info
        self.session = session
        identity = stable_identity(info)
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self._handshakes: dict[str, zmq.asyncio.Socket] = {}
        iopub: zmq.Socket[bytes] = zmq.Socket(context, zmq.SUB)  # not asyncio: see LoopSub
        iopub.linger = 0
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        iopub.connect(_url(info, "iopub"))
        self.iopub = LoopSub(iopub)
        for channel in REQUEST_CHANNELS:
            sock = context.socket(_TYPES[channel])
            sock.linger = 0
            if channel in ("shell", "stdin"):
                sock.identity = identity
            if channel in UNPROBED:
                # Before connecting, so that the event cannot be missed.
                self._handshakes[channel] = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sock.connect(_url(info, channel))
            self.sockets[channel] = sock

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
        sock = self.sockets.get(channel)
        if sock is not None and not sock.closed:
            sock.disable_monitor()
        monitor.close(linger=0)

    async def send(self, channel: str, parts: list[bytes]) -> None:
        """Sign the four JSON parts and send them unchanged, buffers after them."""
        signature = self.session.sign(parts[:4])
        await self.sockets[channel].send_multipart([DELIMITER, signature, *parts], copy=False)

    async def recv(self, channel: str) -> list[bytes]:
        """The next message on `channel` as its parts after the signature."""
        receive = (
            self.iopub.recv_multipart
            if channel == "iopub"
            else self.sockets[channel].recv_multipart
        )
        while True:
            parts = message_parts(await receive())
            if parts is not None:
                return parts

    def pending(self, channel: str) -> bool:
        """A message is waiting on `channel` (not yet received)."""
        if channel == "iopub":
            return self.iopub.pending()
        events = self.sockets[channel].getsockopt(zmq.EVENTS)
        return bool(int(events) & zmq.POLLIN)

    def close(self) -> None:
        for channel in list(self._handshakes):
            self._stop_monitor(channel)
        for sock in self.sockets.values():
            sock.close(linger=0)
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
