"""One iopub subscription per kernel per api replica, shared by its websockets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from kernelbus import subjects
from kernelbus.bus_types import Client, Msg, Subscription
from kernelbus.chunking import Reassembler
from kernelbus.framing import FrameError, header_of, unpack_v1
from kernelbus_api.channels.connection import Connection

log = logging.getLogger(__name__)


@dataclass
class _Feed:
    subscription: Subscription | None = None
    connections: set[Connection] = field(default_factory=set)
    reassembler: Reassembler = field(default_factory=Reassembler)

    async def on_msg(self, msg: Msg) -> None:
        frame = self.reassembler.feed(msg.headers, msg.data)
        if frame is None:
            return
        try:
            channel, parts = unpack_v1(frame)
            header = header_of(parts)
        except (FrameError, ValueError) as exc:
            log.warning("dropping a malformed message on %s: %s", msg.subject, exc)
            return
        for conn in list(self.connections):
            conn.deliver_live(channel, parts, frame, header.get("msg_type"), header.get("msg_id"))


@dataclass
class KernelFeeds:
    """Subscribe a kernel's iopub subject on its first connection, drop it after its last.

    Callers serialise `join`/`leave` (the hub's lock), so a subscription is never
    created twice or dropped under a joining connection.
    """

    nc: Client
    _feeds: dict[str, _Feed] = field(default_factory=dict)

    async def join(self, conn: Connection) -> None:
        feed = self._feeds.get(conn.kernel_id)
        if feed is None:
            feed = self._feeds[conn.kernel_id] = _Feed()
            subject = subjects.kernel_iopub(conn.kernel_id)
            feed.subscription = await self.nc.subscribe(subject, cb=feed.on_msg)
        feed.connections.add(conn)

    async def leave(self, conn: Connection) -> None:
        feed = self._feeds.get(conn.kernel_id)
        if feed is None:
            return
        feed.connections.discard(conn)
        if not feed.connections:
            del self._feeds[conn.kernel_id]
            if feed.subscription is not None:
                await feed.subscription.unsubscribe()
