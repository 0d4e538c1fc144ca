"""CPU per received iopub-like message: pyzmq's asyncio socket (as the iopub keeper and the
worker's bridge receive) against a blocking poller thread. Numbers in RESULTS.md (run D).

A sender process publishes `-n` seven-part messages (the shape of an ipykernel iopub message)
in bursts of 4 with 0.5 ms between bursts; the receiver keeps each in a bounded ring, as the
keeper does, and reports its own CPU time (user + system, its ZMQ I/O thread included) per
message. Usage: `python bench/zmq_recv.py [-n 20000] [--reps 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import time
from collections import deque
from multiprocessing.synchronize import Event

import uvloop
import zmq
import zmq.asyncio

from kernelbus.natsserver import free_port

DELIMITER = b"<IDS|MSG>"
PARTS = [
    b"kernel.0.status",
    DELIMITER,
    b"0" * 64,
    b'{"msg_id": "' + b"0" * 32 + b'", "msg_type": "status", "version": "5.3"}',
    b'{"msg_id": "' + b"1" * 32 + b'", "msg_type": "execute_request"}',
    b"{}",
    b'{"execution_state": "busy"}',
]
END = [b"end", DELIMITER, b"", b"", b"", b"", b"end"]


def send(url: str, count: int, ready: Event) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.PUB)
    sock.bind(url)
    ready.wait()
    time.sleep(0.5)  # the subscription reaches the publisher
    for _ in range(count // 4):
        for _ in range(4):
            sock.send_multipart(PARTS)
        time.sleep(0.0005)
    for _ in range(50):  # a few, in case one is dropped before the end is seen
        sock.send_multipart(END)
        time.sleep(0.01)
    sock.close(linger=0)
    context.term()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def keep(ring: deque[tuple[float, list[bytes]]], frames: list[bytes]) -> None:
    at = frames.index(DELIMITER)
    ring.append((time.monotonic(), frames[at + 2 :]))


async def receive_asyncio(url: str, ready: Event) -> tuple[int, float]:
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    ring: deque[tuple[float, list[bytes]]] = deque(maxlen=1000)
    ready.set()
    count = 0
    frames = await sock.recv_multipart()
    started = cpu()
    while True:
        if frames[-1] == b"end":
            break
        keep(ring, frames)
        count += 1
        frames = await sock.recv_multipart()
    spent = cpu() - started
    sock.close(linger=0)
    context.term()
    return count, spent


async def receive_reader(url: str, ready: Event) -> tuple[int, float]:
    """A plain socket drained by an event-loop reader callback on its FD (no futures)."""
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    ring: deque[tuple[float, list[bytes]]] = deque(maxlen=1000)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    count, started = 0, 0.0

    def drain() -> None:
        nonlocal count, started
        while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            frames = sock.recv_multipart(zmq.NOBLOCK)
            if not started:
                started = cpu()
                continue
            if frames[-1] == b"end":
                if not done.done():
                    done.set_result(None)
                return
            keep(ring, frames)
            count += 1

    loop.add_reader(sock.FD, drain)
    ready.set()
    drain()
    await done
    spent = cpu() - started
    loop.remove_reader(sock.FD)
    sock.close(linger=0)
    context.term()
    return count, spent


def receive_thread(url: str, ready: Event) -> tuple[int, float]:
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    ring: deque[tuple[float, list[bytes]]] = deque(maxlen=1000)
    ready.set()
    count, ended = 0, False
    poller.poll()
    started = cpu()
    while not ended:
        poller.poll()
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[-1] == b"end":
                ended = True
                break
            keep(ring, frames)
            count += 1
    spent = cpu() - started
    sock.close(linger=0)
    context.term()
    return count, spent


def run(mode: str, count: int) -> float:
    url = f"tcp://127.0.0.1:{free_port()}"
    ready = multiprocessing.Event()
    sender = multiprocessing.Process(target=send, args=(url, count, ready))
    sender.start()
    try:
        if mode == "asyncio":
            received, spent = asyncio.run(receive_asyncio(url, ready))
        elif mode == "asyncio-uvloop":
            received, spent = uvloop.run(receive_asyncio(url, ready))
        elif mode == "reader":
            received, spent = asyncio.run(receive_reader(url, ready))
        elif mode == "reader-uvloop":
            received, spent = uvloop.run(receive_reader(url, ready))
        else:
            received, spent = receive_thread(url, ready)
    finally:
        sender.join()
    return spent / received * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    modes = ("asyncio", "asyncio-uvloop", "reader", "reader-uvloop", "thread")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.reps):
        for mode in results:  # interleaved
            results[mode].append(run(mode, args.n))
    for mode, values in results.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{mode}: median {statistics.median(values):.1f} µs CPU per message ({shown})")


if __name__ == "__main__":
    main()
