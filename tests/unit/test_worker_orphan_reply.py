"""A reply to a request sent through a crashed worker (its routes died with it) goes to every
client of the re-adopted kernel; when nobody is attached at that moment, because the api
replica of the kernel's only websocket died too, it is kept for the session's return like the
kernel's iopub output, not published to nobody (found by
tests/integration/test_worker_then_api_loss.py on a slow machine: the cell ended while the
second replica was still starting, and its reply never arrived)."""

from __future__ import annotations

import logging
import time
from typing import cast

import zmq.asyncio

from kernelbus import subjects
from kernelbus.framing import pack_v1, unpack_v1
from kernelbus_worker.activity import Activity
from kernelbus_worker.bridge import KernelBridge
from kernelbus_worker.connections import ConnectionTable, Limits
from kernelbus_worker.outbox import Outbox

LIMITS = Limits(
    replay_window=60, replay_max_messages=100, replay_max_bytes=1 << 20, recent_window=60
)
PARTS = [b'{"msg_id": "r1", "msg_type": "execute_reply"}', b'{"msg_id": "p1"}', b"{}", b"{}"]


class RecordingOutbox:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, frame: bytes) -> None:
        self.published.append((subject, frame))


def readopted_bridge() -> tuple[KernelBridge, RecordingOutbox]:
    outbox = RecordingOutbox()
    table = ConnectionTable(LIMITS, logging.getLogger("test"))
    bridge = KernelBridge(
        cast(zmq.asyncio.Context, None),
        cast(Outbox, outbox),
        table,
        Activity(),
        lambda active, changed: None,
        "k1",
        logging.getLogger("test"),
    )
    bridge.readopted = True
    return bridge, outbox


async def test_an_orphan_reply_with_nobody_attached_is_kept_for_the_sessions_return() -> None:
    bridge, _ = readopted_bridge()
    table = bridge.connections
    table.attach("c1", "s1", "api-a")  # the client re-attached to this worker ...
    table.drop_lost(["c1"], since=time.monotonic())  # ... then its replica died
    await bridge._route_reply("shell", PARTS, "p1")  # the route to p1 died with the old worker
    replayed = table.attach("c2", "s1", "api-b")  # the session comes back on another replica
    assert [unpack_v1(frame) for frame in replayed] == [("shell", PARTS)]


async def test_an_orphan_reply_goes_to_every_attached_client_and_is_remembered() -> None:
    bridge, outbox = readopted_bridge()
    bridge.connections.attach("c1", "s1", "api-a")
    await bridge._route_reply("shell", PARTS, "p1")
    frame = pack_v1("shell", PARTS)
    assert outbox.published == [(subjects.kernel_iopub("k1"), frame)]
    # remembered as sent to everyone: resent to the session if that replica is lost
    assert [(t, f) for _, t, f in bridge.connections.recent.since(0.0)] == [(None, frame)]
