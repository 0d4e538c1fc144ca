"""The iopub keeper's ring (ADR 0014): what a successor fetches after a worker crash."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import zmq

from kernelbus_worker.keeper import DRAIN_BATCH, Keeper, Watched, msg_id_of


def _parts(msg_id: str) -> list[bytes]:
    return [json.dumps({"msg_id": msg_id}).encode(), b"{}", b"{}", b"{}"]


def test_the_ring_answers_what_came_after_the_acked_message() -> None:
    ring = Watched("k", "tcp://127.0.0.1:1", None, None, window=10, max_bytes=1000)  # type: ignore[arg-type]
    for n, msg_id in enumerate("abcd"):
        ring.add(msg_id, _parts(msg_id), now=float(n))
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "abcd"]
    ring.acked = "b"
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "cd"]
    ring.acked = "gone"  # evicted or never seen: everything kept (the api drops what it sent)
    assert len(ring.after_ack()) == 4
    ring.add("e", _parts("e"), now=12.5)  # a, b and c are older than the 10 s window
    assert [p[0] for p in ring.after_ack()] == [_parts(m)[0] for m in "de"]


def test_msg_ids_read_from_headers_only_when_a_fetch_needs_them() -> None:
    ring = Watched("k", "tcp://127.0.0.1:1", None, None, 10.0, 1 << 20)  # type: ignore[arg-type]
    for n, msg_id in enumerate("abc"):
        ring.add(None, _parts(msg_id), now=float(n))
    ring.acked = "b"
    assert [p[0] for p in ring.after_ack()] == [_parts("c")[0]]


def test_a_forgotten_kernels_ring_is_emptied_at_once() -> None:
    """Its task and it refer to each other: without this the frames would wait for a
    garbage collection (a keeper grew by ~57 MiB per deleted kernel that printed 20 MB)."""
    context = zmq.Context()
    try:
        sock = context.socket(zmq.SUB)
        ring = Watched("k", "tcp://127.0.0.1:1", None, sock, 10.0, 1 << 20)  # type: ignore[arg-type]
        ring.add("a", _parts("a"), now=0.0)
        ring.close()
        assert not ring.ring and ring.size == 0
    finally:
        context.term()


def _message(n: int) -> list[bytes]:
    return [b"topic", b"<IDS|MSG>", b"sig", *_parts(f"m{n}")]


async def test_the_keeper_keeps_a_backlog_longer_than_a_batch_in_order(tmp_path: Path) -> None:
    """A SUB drained a pace after the loop's reader saw it: ZMQ's FD is not readable again
    for messages already waiting, so a drain that stopped at a batch must come back by
    itself. A message without the delimiter or with fewer than four parts is skipped."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    keeper = Keeper(tmp_path, window=60.0, max_bytes=1 << 30, idle=60.0)
    try:
        info = {"ip": "127.0.0.1", "iopub_port": port, "transport": "tcp"}
        keeper.handle({"op": "sync", "kernels": {"k": {"info": info, "pid": os.getpid()}}})
        watched = keeper.kernels["k"]
        while not watched.ring:  # the subscription joins after a while (slow joiner)
            pub.send_multipart(_message(-1))
            await asyncio.sleep(0.01)
        watched.ring.clear()
        pub.send_multipart([b"no delimiter", *_parts("x")])
        pub.send_multipart([b"<IDS|MSG>", b"sig", b"{}", b"{}"])
        count = 3 * DRAIN_BATCH + 10
        for n in range(count):
            pub.send_multipart(_message(n))
        for _ in range(500):
            if len(watched.ring) >= count:
                break
            await asyncio.sleep(0.01)
        ids = [msg_id_of(parts) for _, _, parts in watched.ring]
        assert ids[-count:] == [f"m{n}" for n in range(count)]
        assert ids[: len(ids) - count] == ["m-1"] * (len(ids) - count)  # probes only
        keeper.handle({"op": "forget", "kernel_id": "k"})
        assert watched.socket.closed and watched.loop is None
        pub.send_multipart(_message(count))
        await asyncio.sleep(0.05)  # a forgotten kernel's reader is gone: nothing runs
        assert not watched.ring
    finally:
        pub.close()
        keeper.close()
        context.term()


async def test_a_fetch_takes_what_waits_for_the_next_pace(tmp_path: Path) -> None:
    """The keeper reads a kernel's messages a pace after the first one arrives, not one by
    one; a fetch (a successor after a worker crash) must not miss those still unread."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    keeper = Keeper(tmp_path, window=60.0, max_bytes=1 << 30, idle=60.0, pace=3600.0)
    try:
        info = {"ip": "127.0.0.1", "iopub_port": port, "transport": "tcp"}
        keeper.handle({"op": "sync", "kernels": {"k": {"info": info, "pid": os.getpid()}}})
        watched = keeper.kernels["k"]
        fetch = {"op": "fetch", "kernel_id": "k"}
        frames: list[list[str]] = []
        for attempt in range(1, 501):  # until the subscription has joined (slow joiner)
            frames = keeper.handle(fetch)["frames"]
            if frames:
                break
            pub.send_multipart(_message(-attempt))  # each probe its own msg_id
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("a fetch got nothing of what was sent for 5 s")
        last_probe = json.loads(base64.b64decode(frames[-1][0]))["msg_id"]
        keeper.handle({"op": "sync", "kernels": {"k": {"info": info, "acked": last_probe}}})
        for n in range(5):
            pub.send_multipart(_message(n))
        for _ in range(500):  # until a message waits on the keeper's socket, unread
            if int(watched.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("nothing reached the keeper's socket for 5 s")
        assert "m0" not in [
            msg_id_of(parts) for _, _, parts in watched.ring
        ]  # the drain is an hour away
        before = len(watched.ring)
        for _ in range(500):  # each fetch takes what has arrived by then
            frames = keeper.handle(fetch)["frames"]
            if len(frames) >= 5:
                break
            await asyncio.sleep(0.01)
        assert [json.loads(base64.b64decode(f[0]))["msg_id"] for f in frames] == [
            f"m{n}" for n in range(5)
        ]
        assert len(watched.ring) == before + 5
    finally:
        pub.close()
        keeper.close()
        context.term()
