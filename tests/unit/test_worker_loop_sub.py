"""The worker's iopub SUB received from the loop's reader (`zmqbridge.LoopSub`), with real
ZMQ sockets in one process: nothing waiting is missed although ZMQ's FD signals state
changes only, a waiting receive is woken, and closing cancels it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import zmq

from kernelbus_worker.zmqbridge import LoopSub

Pair = tuple[zmq.Socket[bytes], LoopSub]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """A PUB and a `LoopSub` subscribed to it, the subscription live; closed after the test."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(f"tcp://127.0.0.1:{port}")
    sub = LoopSub(sock)
    try:
        await _joined(pub, sub)
        yield pub, sub
    finally:
        sub.close()
        pub.close(linger=0)
        context.term()


async def _joined(pub: zmq.Socket[bytes], sub: LoopSub) -> None:
    """Until the subscription is live (slow joiner); the probes are received and dropped."""
    while not sub.pending():
        pub.send_multipart([b"probe"])
        await asyncio.sleep(0.01)
    while sub.pending():
        await sub.recv_multipart()


def _until_pending(sub: LoopSub) -> None:
    deadline = time.monotonic() + 5
    while not sub.pending():
        assert time.monotonic() < deadline
        time.sleep(0.001)


async def test_a_backlog_and_later_messages_all_arrive_in_order(pair: Pair) -> None:
    pub, sub = pair
    for n in range(500):  # queued before anyone receives: one FD signal for all
        pub.send_multipart([b"m", str(n).encode()])
    await asyncio.sleep(0.1)
    got = [(await asyncio.wait_for(sub.recv_multipart(), 5))[1] for _ in range(500)]
    assert got == [str(n).encode() for n in range(500)]

    waiting = asyncio.create_task(sub.recv_multipart())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pub.send_multipart([b"m", b"late"])
    assert (await asyncio.wait_for(waiting, 5))[1] == b"late"


async def test_pending_wakes_a_waiting_receive_and_close_cancels_one(pair: Pair) -> None:
    pub, sub = pair
    waiting = asyncio.create_task(sub.recv_multipart())
    await asyncio.sleep(0.02)
    pub.send_multipart([b"m", b"x"])
    # No loop turn until `pending` saw it: its EVENTS read took the FD's signal, so
    # the loop's reader never fires; the receive must be woken all the same.
    _until_pending(sub)
    assert (await asyncio.wait_for(waiting, 5))[1] == b"x"

    waiting = asyncio.create_task(sub.recv_multipart())
    await asyncio.sleep(0.02)
    sub.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sub.sock.closed
