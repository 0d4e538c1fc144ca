"""A kernel's sockets received and sent from the loop's reader (`zmqbridge.LoopSocket`), with
real ZMQ sockets in one process: nothing waiting is missed although ZMQ's FD signals state
changes only (and any operation on the socket takes the signal), a waiting receive is woken, a
send waits for room, and closing cancels what waits."""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import zmq

from kernelbus_worker.zmqbridge import LoopSocket

Pair = tuple[zmq.Socket[bytes], LoopSocket]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """A PUB and a `LoopSocket` subscribed to it, the subscription live; closed after the test."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(f"tcp://127.0.0.1:{port}")
    sub = LoopSocket(sock)
    try:
        await _joined(pub, sub)
        yield pub, sub
    finally:
        sub.close()
        pub.close(linger=0)
        context.term()


async def _joined(pub: zmq.Socket[bytes], sub: LoopSocket) -> None:
    """Until the subscription is live (slow joiner); the probes are received and dropped."""
    while not sub.pending():
        pub.send_multipart([b"probe"])
        await asyncio.sleep(0.01)
    while sub.pending():
        await sub.recv_multipart()


def _until_pending(sub: LoopSocket) -> None:
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


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _readable(sock: zmq.Socket[bytes]) -> bool:
    """The FD's signal is up (select does not take it, unlike an EVENTS read)."""
    return bool(select.select([sock.FD], [], [], 0)[0])


def _until_readable(sock: zmq.Socket[bytes]) -> None:
    """Without running the loop, until the FD's signal is up; then past libzmq's throttle
    (~1 ms), so that the next operation on the socket processes its commands."""
    deadline = time.monotonic() + 5
    while not _readable(sock):
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.01)


async def test_a_reply_whose_signal_a_send_took_still_wakes_the_receive(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """The bridge's reply pump waits on shell while client messages are sent on it: a send
    processes ZMQ's pending commands, taking the signal of a reply that just arrived."""
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    shell = LoopSocket(dealer)
    try:
        await shell.send_multipart([b"hello"])
        identity, _ = await asyncio.to_thread(router.recv_multipart)
        reply = asyncio.create_task(shell.recv_multipart())
        await asyncio.sleep(0)  # one loop turn: the receive runs until it waits for the FD
        router.send_multipart([identity, b"reply"])
        _until_readable(dealer)  # the reply reached the socket; the loop has not run since
        await shell.send_multipart([b"next"])
        assert not _readable(dealer)  # the send took the signal: no reader will fire
        assert await asyncio.wait_for(reply, 5) == [b"reply"]
    finally:
        shell.close()
        router.close(linger=0)


async def test_a_send_waits_for_room_and_keeps_the_order(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    dealer = context.socket(zmq.DEALER)
    dealer.sndhwm = 1
    address = f"ipc://{tmp_path}/shell"  # a path, not a port another test could take meanwhile
    dealer.connect(address)  # nobody listens yet: messages queue up to the high-water mark
    sock = LoopSocket(dealer)
    sent: list[int] = []
    try:
        sending = asyncio.create_task(_send_numbered(sock, 20, sent))
        await _until_stuck(sending, sent)
        router = context.socket(zmq.ROUTER)
        router.bind(address)
        try:
            got = [(await asyncio.to_thread(router.recv_multipart))[2] for _ in range(20)]
            await asyncio.wait_for(sending, 5)
        finally:
            router.close(linger=0)
        assert got == [str(n).encode() for n in range(20)]
    finally:
        sock.close()


async def test_closing_cancels_a_send_waiting_for_room(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
) -> None:
    dealer = context.socket(zmq.DEALER)
    dealer.sndhwm = 1
    dealer.connect(f"ipc://{tmp_path}/nobody")
    sock = LoopSocket(dealer)
    sent: list[int] = []
    try:
        sending = asyncio.create_task(_send_numbered(sock, 20, sent))
        await _until_stuck(sending, sent)
    finally:
        sock.close()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert dealer.closed


async def _send_numbered(sock: LoopSocket, count: int, sent: list[int]) -> None:
    for n in range(count):
        await sock.send_multipart([b"m", str(n).encode()])
        sent.append(n)


async def _until_stuck(sending: asyncio.Task[None], sent: list[int]) -> None:
    """Until the sends stopped at the high-water mark, nobody receiving: the task waits, and
    waits for the FD rather than retrying (this process's CPU time stays flat meanwhile)."""
    deadline = time.monotonic() + 5
    while not sent:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    cpu = time.process_time()
    await asyncio.sleep(0.2)
    assert time.process_time() - cpu < 0.05
    assert not sending.done()
    assert len(sent) < 20
