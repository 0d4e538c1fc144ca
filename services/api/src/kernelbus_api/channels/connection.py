"""One kernel websocket: bus messages out to the client, client frames in to the bus.

Bus callbacks only enqueue (`deliver`), so a slow client never stalls the shared iopub
subscription of a kernel; one send task per connection writes the queue in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from kernelbus.bus_types import Msg
from kernelbus.chunking import Reassembler
from kernelbus.framing import FrameError, header_of, pack_v1, unpack_v1
from kernelbus.logs import kernel_logger
from kernelbus_api.channels import codec
from kernelbus_api.channels.ratelimit import IOPubRateLimiter
from kernelbus_api.channels.undelivered import Held, SentInputs

log = logging.getLogger(__name__)

Publish = Callable[[bytes], Awaitable[None]]
"""Sends one client message, as its bus frame, towards the kernel."""

REPLAY_WAIT = 10.0
"""Seconds the kernel's live output waits at most for the worker's replay to a new websocket."""
SEEN_IDS = 20_000
"""msg_ids remembered per connection: more than a worker's recent-frames window holds."""


@dataclass
class SeenIds:
    """The last `SEEN_IDS` msg_ids delivered to a client (handed on to the next connection of
    the same session on this replica, so a client that comes back is not sent them twice)."""

    ids: set[str] = field(default_factory=set)
    order: deque[str] = field(default_factory=deque)

    def check(self, msg_id: str) -> bool:
        """True if `msg_id` was delivered before; otherwise remember it."""
        if msg_id in self.ids:
            return True
        self.ids.add(msg_id)
        self.order.append(msg_id)
        if len(self.order) > SEEN_IDS:
            self.ids.discard(self.order.popleft())
        return False


@dataclass(frozen=True)
class Outgoing:
    channel: str
    parts: list[bytes]
    frame: bytes


@dataclass(frozen=True)
class Close:
    code: int
    reason: str = ""


Live = tuple[str, list[bytes], bytes, object, object]
"""(channel, parts, frame, msg_type, msg_id) of a message of the kernel's iopub feed."""


@dataclass(eq=False)
class Connection:
    """A kernel websocket between handshake and close (one per `kb.conn.<conn_id>`)."""

    kernel_id: str
    session_id: str
    websocket: WebSocket
    v1: bool
    max_bytes: int
    limiter: IOPubRateLimiter | None
    allowed_types: frozenset[str] = frozenset()
    strip_buffers: bool = False
    traceback_replacement: str | None = None
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outbox: asyncio.Queue[Outgoing | Close] = field(default_factory=asyncio.Queue)
    reassembler: Reassembler = field(default_factory=Reassembler)
    closing: bool = False
    held_input: list[Held] | None = None
    """Client messages kept while the bus is down or this connection re-attaches after it (or
    after NATS said one reached no worker), in sequence order."""
    sent: SentInputs = field(default_factory=SentInputs)
    seen: SeenIds = field(default_factory=lambda: SeenIds())
    early_live: list[Live] | None = field(default_factory=list)
    """The kernel's iopub feed before this connection is live (`went_live`): held back, since
    the worker may first owe its session older output. None once live."""
    replay_left: int = 0
    """Messages of the worker's replay still to come on this connection's own subject."""

    @property
    def session_key(self) -> str:
        return f"{self.kernel_id}:{self.session_id}"

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        return kernel_logger(log, kernel_id=self.kernel_id, conn_id=self.conn_id)

    # --- bus -> client ----------------------------------------------------------------------

    async def on_bus_msg(self, msg: Msg) -> None:
        """Callback of this connection's own subject (replies, replays)."""
        frame = self.reassembler.feed(msg.headers, msg.data)
        if frame is not None:
            self.deliver_frame(frame)
            if self.replay_left:
                self.replay_left -= 1
                if not self.replay_left:
                    self._release_early()

    def deliver_live(
        self, channel: str, parts: list[bytes], frame: bytes, msg_type: object, msg_id: object
    ) -> None:
        """A message of the kernel's iopub feed: held back until the connection is live."""
        if self.early_live is not None:
            self.early_live.append((channel, parts, frame, msg_type, msg_id))
            return
        self.deliver(channel, parts, frame, msg_type, msg_id)

    def went_live(self, replayed: int) -> None:
        """The worker answered the attach, and sends `replayed` older messages on this
        connection's own subject next.

        While nobody was attached, the worker kept the session's output for a replay but also
        published it on the kernel's iopub subject, where this connection's feed saw what came
        after it subscribed. Those messages go out after the replay (which has them too: the
        second copy is dropped by msg_id), so that the client sees the output in its order.
        """
        self.replay_left = replayed
        if not replayed:
            self._release_early()
        else:  # a worker that dies during its replay: what came live still goes out
            asyncio.get_running_loop().call_later(REPLAY_WAIT, self._release_early)

    def _release_early(self) -> None:
        early, self.early_live = self.early_live or [], None
        self.replay_left = 0
        for item in early:
            self.deliver(*item)

    def deliver_frame(self, frame: bytes) -> None:
        try:
            channel, parts = unpack_v1(frame)
            header = header_of(parts)
        except (FrameError, ValueError) as exc:
            self.log.warning("dropping a malformed bus message: %s", exc)
            return
        self.deliver(channel, parts, frame, header.get("msg_type"), header.get("msg_id"))

    def deliver(
        self,
        channel: str,
        parts: list[bytes],
        frame: bytes,
        msg_type: object,
        msg_id: object = None,
    ) -> None:
        if self.closing or self._seen_before(msg_id):
            return
        if channel == "iopub" and isinstance(msg_type, str) and self._rate_limited(parts, msg_type):
            return
        if self.traceback_replacement is not None and channel == "iopub" and msg_type == "error":
            parts = codec.hide_traceback(parts, self.traceback_replacement)
            frame = pack_v1(channel, parts)
        if self.strip_buffers and len(parts) > 4:
            parts = codec.without_buffers(parts)
        self.outbox.put_nowait(Outgoing(channel, parts, frame))
        if codec.final_dead_status(channel, msg_type, parts):
            self.close_soon(1000, "kernel is dead")

    def _seen_before(self, msg_id: object) -> bool:
        """After a bus outage the worker resends what this connection may have missed; what
        it did get already is recognised by msg_id (the last `SEEN_IDS`) and not sent twice."""
        if not isinstance(msg_id, str) or not msg_id:
            return False
        return self.seen.check(msg_id)

    def _rate_limited(self, parts: list[bytes], msg_type: str) -> bool:
        if self.limiter is None:
            return False
        idle = msg_type == "status" and codec.execution_state(parts) == "idle"
        nbytes = sum(len(p) for p in parts)
        verdict = self.limiter.check(msg_type, nbytes, time.monotonic(), idle=idle)
        for text in verdict.notices:
            self.log.warning(text)
            notice = codec.stderr_notice(text, codec.parent_of(parts), self.session_id)
            self.outbox.put_nowait(Outgoing("iopub", unpack_v1(notice)[1], notice))
        return verdict.drop

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close after the messages already queued (kernel dead, replaced, bad frame)."""
        if not self.closing:
            self.closing = True
            self.outbox.put_nowait(Close(code, reason))

    # --- the websocket ------------------------------------------------------------------------

    async def run(self, publish: Publish) -> None:
        """Until the client leaves or the server closes; then both directions stop."""
        tasks = [
            asyncio.create_task(self._send_loop()),
            asyncio.create_task(self._receive_loop(publish)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_loop(self) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                item = await self.outbox.get()
                if isinstance(item, Close):
                    await self.websocket.close(item.code, item.reason)
                    return
                try:
                    data = codec.client_frame(item.channel, item.parts, item.frame, self.v1)
                except ValueError as exc:  # not a Jupyter message: dropped, the socket stays
                    self.log.warning("dropping a malformed bus message: %s", exc)
                    continue
                if isinstance(data, bytes):
                    await self.websocket.send_bytes(data)
                else:
                    await self.websocket.send_text(data)

    async def _receive_loop(self, publish: Publish) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or message.get("text") or ""
                await self._forward(data, publish)

    async def _forward(self, data: str | bytes, publish: Publish) -> None:
        if self.closing:
            return
        try:
            frame, header = codec.parse_client_frame(data, self.v1, self.max_bytes)
        except codec.FrameTooLarge as exc:
            self.log.warning("closing: %s", exc)
            self.close_soon(1009, "message too big")
            return
        except FrameError as exc:
            self.log.warning("dropping a bad client frame: %s", exc)
            return
        if self.allowed_types and header["msg_type"] not in self.allowed_types:
            self.log.warning("dropping a %s message: not allowed", header["msg_type"])
            return
        await publish(frame)
