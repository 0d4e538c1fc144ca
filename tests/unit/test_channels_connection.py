"""What a connection queues for its client: rate limiting, notices, the final close."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket

from kernelbus.bus_types import Msg
from kernelbus.framing import pack_v1, unpack_v1
from kernelbus_api.channels import connection as connection_module
from kernelbus_api.channels.connection import Close, Connection, Outgoing
from kernelbus_api.channels.ratelimit import IOPubRateLimiter, RateLimits

PARENT = {"msg_id": "req", "msg_type": "execute_request"}


def connection(msg_rate: float = 0) -> Connection:
    limiter = IOPubRateLimiter(RateLimits(msg_rate, 0, 60)) if msg_rate else None
    return Connection(
        kernel_id="k",
        session_id="s",
        websocket=cast(WebSocket, object()),  # never touched by `deliver`
        v1=True,
        max_bytes=1024,
        limiter=limiter,
    )


def message(
    msg_type: str,
    content: dict[str, Any],
    parent: dict[str, Any] = PARENT,
    msg_id: str | None = None,
) -> bytes:
    header = {"msg_id": msg_id or uuid.uuid4().hex, "msg_type": msg_type}
    parts = [json.dumps(p).encode() for p in (header, parent, {}, content)]
    return pack_v1("iopub", parts)


def queued(conn: Connection) -> list[Outgoing | Close]:
    items = []
    while not conn.outbox.empty():
        items.append(conn.outbox.get_nowait())
    return items


def test_messages_are_queued_as_they_came() -> None:
    conn = connection()
    frame = message("display_data", {"data": {}})
    conn.deliver_frame(frame)
    (item,) = queued(conn)
    assert isinstance(item, Outgoing) and item.frame == frame and item.channel == "iopub"


def test_over_the_limit_a_notice_replaces_the_message_then_drops() -> None:
    conn = connection(msg_rate=1 / 60)  # one message per 60 s window
    for _ in range(3):
        conn.deliver_frame(message("display_data", {"data": {}}))
    items = queued(conn)
    assert len(items) == 2
    notice = items[1]
    assert isinstance(notice, Outgoing)
    assert json.loads(notice.parts[0])["msg_type"] == "stream"
    assert json.loads(notice.parts[1]) == PARENT
    assert json.loads(notice.parts[3])["text"].startswith("IOPub message rate exceeded.")


def test_final_dead_status_is_delivered_then_the_socket_closes() -> None:
    conn = connection()
    conn.deliver_frame(message("status", {"execution_state": "dead"}, parent={}))
    conn.deliver_frame(message("display_data", {"data": {}}))
    items = queued(conn)
    assert isinstance(items[0], Outgoing)
    assert items[1] == Close(1000, "kernel is dead")
    assert len(items) == 2


def test_restarting_status_keeps_the_socket() -> None:
    conn = connection()
    conn.deliver_frame(message("status", {"execution_state": "restarting"}, parent={}))
    assert not conn.closing


def test_malformed_bus_messages_are_dropped() -> None:
    conn = connection()
    conn.deliver_frame(b"garbage")
    conn.deliver_frame(pack_v1("iopub", [b"[1]", b"{}", b"{}", b"{}"]))
    assert queued(conn) == []


def test_a_message_delivered_again_after_a_bus_outage_is_not_sent_twice() -> None:
    conn = connection()
    first = message("stream", {"name": "stdout", "text": "1\n"}, msg_id="a")
    conn.deliver_frame(first)
    conn.deliver_frame(message("stream", {"name": "stdout", "text": "2\n"}, msg_id="b"))
    conn.deliver_frame(first)  # resent by the worker's hold after the outage
    assert [json.loads(i.parts[0])["msg_id"] for i in queued(conn) if isinstance(i, Outgoing)] == [
        "a",
        "b",
    ]


def bus_msg(frame: bytes) -> Msg:
    return cast(Msg, SimpleNamespace(headers=None, data=frame))


def live(conn: Connection, frame: bytes) -> None:
    """As the kernel's iopub feed delivers (`feeds._Feed.on_msg`)."""
    channel, parts = unpack_v1(frame)
    header = json.loads(parts[0])
    conn.deliver_live(channel, parts, frame, header["msg_type"], header["msg_id"])


def ids(conn: Connection) -> list[str]:
    return [json.loads(i.parts[0])["msg_id"] for i in queued(conn) if isinstance(i, Outgoing)]


def stream(n: int) -> bytes:
    return message("stream", {"name": "stdout", "text": f"{n}\n"}, msg_id=f"m{n}")


async def test_live_output_waits_for_the_replay_and_goes_out_after_it() -> None:
    """The worker kept m1..m3 for the session while nobody was attached, and also published
    m3 on the kernel's subject after this websocket's feed subscribed, before its attach was
    answered; then m4 came live. The client gets m1..m4 in order (before: m3, m1, m2, m4; the
    replayed m3 was dropped as seen)."""
    conn = connection()
    live(conn, stream(3))
    conn.went_live(replayed=3)
    await conn.on_bus_msg(bus_msg(stream(1)))
    live(conn, stream(4))
    await conn.on_bus_msg(bus_msg(stream(2)))
    await conn.on_bus_msg(bus_msg(stream(3)))
    assert ids(conn) == ["m1", "m2", "m3", "m4"]
    live(conn, stream(5))
    assert ids(conn) == ["m5"]


async def test_without_a_replay_live_output_goes_out_at_once_in_order() -> None:
    conn = connection()
    live(conn, stream(1))
    live(conn, stream(2))
    assert ids(conn) == []
    conn.went_live(replayed=0)
    live(conn, stream(3))
    assert ids(conn) == ["m1", "m2", "m3"]


async def test_live_output_is_not_held_for_ever_by_a_replay_that_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker died during its replay: what came live still goes out (the culler's `dead`
    status among it, which closes the websocket)."""
    monkeypatch.setattr(connection_module, "REPLAY_WAIT", 0.05)
    conn = connection()
    conn.went_live(replayed=5)
    await conn.on_bus_msg(bus_msg(stream(1)))
    live(conn, stream(9))
    assert ids(conn) == ["m1"]
    await asyncio.sleep(0.2)
    assert ids(conn) == ["m9"]
