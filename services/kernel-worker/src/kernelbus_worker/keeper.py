"""The iopub keeper: a small process per worker runtime dir that outlives a crashed worker, as
its kernels do, and keeps the last seconds of each kernel's iopub (ADR 0014).

ipykernel publishes iopub on a PUB socket, which drops every message while no subscriber is
connected: without the keeper, what a kernel prints between its worker's death and the
successor's re-adoption is lost. The keeper is a parallel SUB to each kernel it is told about,
keeps raw message parts (no parsing beyond the header's msg_id) in a ring bounded by age and
bytes, and answers over a Unix socket in the runtime dir (0700):

- `sync`: watch these kernels (connection info, pid) and note what the worker has delivered
  (`acked`: the msg_id of the last iopub message it published and flushed to NATS);
- `forget`: stop watching a kernel; `fetch`: the frames after the acked one (every frame in
  the window when that one is unknown); `stop`: exit.

It exits on `stop`, and by itself once it has watched no live kernel for `idle` seconds.
Requests and replies are JSON objects, each preceded by its length (4 bytes, big-endian);
message parts travel base64-encoded.

Run as `python -m kernelbus_worker.keeper <runtime_dir> [--window S] [--max-bytes N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from kernelbus.memory import DEFAULT_KEEP_BYTES, keep_freed_memory, release_freed_memory
from kernelbus.processes import pid_running
from kernelbus_worker.zmqframes import message_parts, recv_frames

log = logging.getLogger("kernelbus_worker.keeper")

SOCKET_NAME = "iopub-keeper.sock"
MODULE = "kernelbus_worker.keeper"
MAX_REQUEST = 64 * 1024 * 1024
DRAIN_BATCH = 256
"""Messages taken from one socket per drain before others get a turn."""
PACE = 0.05
"""Seconds from a kernel's first unread message to the drain that keeps it and what came
after. The ring is read only after a worker crash (and a fetch drains first), so the keeper
does not wake for every message it keeps (ADR 0027)."""
RCVHWM = 100_000
"""Messages a SUB may queue between drains (ZMQ's default of 1,000 is 50 ms of a busy
kernel's output)."""


@dataclass
class Watched:
    """One kernel's iopub subscription and the ring of what it received."""

    kernel_id: str
    url: str
    pid: int | None
    socket: zmq.Socket[bytes]
    window: float
    max_bytes: int
    ring: deque[tuple[float, str | None, list[bytes]]] = field(default_factory=deque)
    size: int = 0
    acked: str | None = None
    loop: asyncio.AbstractEventLoop | None = None
    """The loop whose reader waits for `socket`'s next message (None: not waiting)."""

    def add(self, msg_id: str | None, parts: list[bytes], now: float) -> None:
        """Keep `parts`; `msg_id` None: read from the header only if a fetch needs it (the
        keeper sees every iopub message, but is asked for them only after a worker crash)."""
        self.ring.append((now, msg_id, parts))
        self.size += sum(map(len, parts))
        while self.ring and (self.size > self.max_bytes or now - self.ring[0][0] > self.window):
            _, _, old = self.ring.popleft()
            self.size -= sum(map(len, old))

    def after_ack(self) -> list[list[bytes]]:
        """What came after the acked message; everything kept if that one is not (any more)
        in the ring (the successor's client side drops what it already delivered)."""
        frames = [parts for _, _, parts in self.ring]
        if self.acked is not None:
            for index, (_, msg_id, parts) in enumerate(self.ring):
                if (msg_id if msg_id is not None else msg_id_of(parts)) == self.acked:
                    return frames[index + 1 :]
        return frames

    def drain(self, limit: int | None = DRAIN_BATCH) -> bool:
        """Keep the messages waiting on the socket, `limit` at most (None: all of them).
        True if that limit stopped it: more may be waiting, and ZMQ's FD will not say so
        (it signals changes, not data, so it is not readable for messages already there)."""
        sock = self.socket
        now = time.monotonic()
        taken = 0
        while limit is None or taken < limit:
            if sock.closed:
                return False
            try:
                # No EVENTS read first: a receive that finds nothing says so (zmq.Again), and
                # like the EVENTS read it processes ZMQ's commands, so the next message signals.
                frames = recv_frames(sock)
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                log.warning("kernel %s: iopub receive failed: %s", self.kernel_id, exc)
                return False
            taken += 1
            parts = message_parts(frames)
            if parts is not None:
                self.add(None, parts, now)
        return True

    def stop_waiting(self) -> None:
        if self.loop is not None and not self.socket.closed:
            self.loop.remove_reader(self.socket.FD)
        self.loop = None  # the loop's reader and this object referred to each other

    def close(self) -> None:
        self.stop_waiting()
        self.socket.close(linger=0)
        self.ring.clear()  # so the frames go now, not at the next garbage collection
        self.size = 0


def iopub_url(info: dict[str, Any]) -> str:
    port = info["iopub_port"]
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"{info.get('transport', 'tcp')}://{info['ip']}:{port}"


def msg_id_of(parts: list[bytes]) -> str:
    try:
        header = json.loads(parts[0])
        return str(header.get("msg_id", "")) if isinstance(header, dict) else ""
    except (ValueError, IndexError):
        return ""


class Keeper:
    def __init__(
        self, runtime_dir: Path, window: float, max_bytes: int, idle: float, pace: float = PACE
    ) -> None:
        self.runtime_dir = runtime_dir
        self.window = window
        self.max_bytes = max_bytes
        self.idle = idle
        self.pace = pace
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.context.set(zmq.MAX_SOCKETS, 100_000)  # one SUB per kernel (default ceiling 1023)
        self.kernels: dict[str, Watched] = {}
        self.stopped = asyncio.Event()
        self._empty_since = time.monotonic()
        self._forgotten = False
        """A kernel was dropped since the last reap: its ring's memory goes back then."""
        self._due: dict[str, Watched] = {}
        """Kernels with unread messages, drained together at the next pace."""
        self._drain_handle: asyncio.Handle | None = None

    # --- requests ---------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "sync":
            for kernel_id, entry in dict(request.get("kernels", {})).items():
                self._watch(str(kernel_id), dict(entry))
            return {"ok": True}
        if op == "forget":
            watched = self.kernels.pop(str(request.get("kernel_id")), None)
            if watched is not None:
                watched.close()
                self._forgotten = True
            return {"ok": True}
        if op == "fetch":
            kept = self.kernels.get(str(request.get("kernel_id")))
            if kept is not None:
                kept.drain(limit=None)  # what waits for the next pace belongs to the answer
            frames = kept.after_ack() if kept is not None else []
            encoded = [[base64.b64encode(p).decode() for p in parts] for parts in frames]
            return {"ok": True, "frames": encoded}
        if op == "stop":
            self.stopped.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _watch(self, kernel_id: str, entry: dict[str, Any]) -> None:
        info = dict(entry.get("info", {}))
        pid = entry.get("pid")
        url = iopub_url(info)
        watched = self.kernels.get(kernel_id)
        if watched is not None and watched.url != url:
            watched.close()
            watched = None
        if watched is None:
            sock = self.context.socket(zmq.SUB)
            sock.linger = 0
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.rcvhwm = RCVHWM  # before connect: a connection takes the HWM it is made with
            sock.connect(url)
            watched = Watched(kernel_id, url, None, sock, self.window, self.max_bytes)
            self.kernels[kernel_id] = watched
            self._wait_for(watched)
            log.info("watching kernel %s at %s", kernel_id, url)
        watched.pid = int(pid) if isinstance(pid, int) else watched.pid
        acked = entry.get("acked")
        if isinstance(acked, str) and acked:
            watched.acked = acked

    # --- reading, paced ---------------------------------------------------------------------
    # A loop reader rather than pyzmq's asyncio socket (no future, task switch and extra
    # EVENTS round per message: bench/zmq_recv.py), and one that only notes the socket: the
    # drain comes `pace` later and takes everything that arrived meanwhile (ADR 0027).

    def _wait_for(self, watched: Watched) -> None:
        """Be told of `watched`'s next message (its socket was just drained, or is new)."""
        watched.loop = asyncio.get_running_loop()
        watched.loop.add_reader(watched.socket.FD, self._signalled, watched)

    def _signalled(self, watched: Watched) -> None:
        watched.stop_waiting()
        self._due[watched.kernel_id] = watched
        if self._drain_handle is None:
            self._drain_handle = asyncio.get_running_loop().call_later(self.pace, self._drain_due)

    def _drain_due(self) -> None:
        self._drain_handle = None
        due, self._due = self._due, {}
        for kernel_id, watched in due.items():
            if self.kernels.get(kernel_id) is not watched:
                continue  # forgotten, or replaced by a new subscription, meanwhile
            if watched.drain():
                self._due[kernel_id] = watched  # a backlog longer than a batch: again soon
            else:
                self._wait_for(watched)
        if self._due:
            self._drain_handle = asyncio.get_running_loop().call_soon(self._drain_due)

    # --- lifetime ---------------------------------------------------------------------------

    async def reap(self, interval: float = 1.0) -> None:
        """Forget kernels whose process is gone; stop after `idle` s without any."""
        while not self.stopped.is_set():
            await asyncio.sleep(interval)
            for kernel_id, watched in list(self.kernels.items()):
                if watched.pid is not None and not pid_running(watched.pid):
                    log.info("kernel %s (pid %d) is gone", kernel_id, watched.pid)
                    self.kernels.pop(kernel_id).close()
                    self._forgotten = True
            if self._forgotten:
                self._forgotten = False
                release_freed_memory()
            now = time.monotonic()
            if self.kernels:
                self._empty_since = now
            elif now - self._empty_since > self.idle:
                log.info("no kernel for %.0f s: stopping", self.idle)
                self.stopped.set()

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                request = await read_message(reader)
                if request is None:
                    return
                await write_message(writer, self.handle(request))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("dropped a client: %s", exc)
        finally:
            writer.close()

    def close(self) -> None:
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        self._due.clear()
        for watched in self.kernels.values():
            watched.close()
        self.kernels.clear()
        self.context.term()


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_REQUEST:
        raise ValueError(f"message of {length} bytes")
    value = json.loads(await reader.readexactly(length))
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


async def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()


async def _answering() -> bool:
    """Another keeper already serves this runtime dir."""
    try:
        _, writer = await asyncio.open_unix_connection(SOCKET_NAME)
    except OSError:
        return False
    writer.close()
    return True


async def run(
    runtime_dir: Path, window: float, max_bytes: int, idle: float, pace: float = PACE
) -> None:
    os.chdir(runtime_dir)  # a relative socket path: the runtime dir's may be too long for one
    if await _answering():
        log.info("a keeper already serves %s", runtime_dir)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET_NAME)
    keeper = Keeper(runtime_dir, window, max_bytes, idle, pace)
    old_mask = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(keeper.serve_client, path=SOCKET_NAME)
    finally:
        os.umask(old_mask)
    log.info("iopub keeper serving %s (pid %d)", runtime_dir, os.getpid())
    reaper = asyncio.get_running_loop().create_task(keeper.reap())
    try:
        await keeper.stopped.wait()
    finally:
        reaper.cancel()
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME)
        keeper.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    parser.add_argument("runtime_dir", type=Path)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--pace", type=float, default=PACE)
    parser.add_argument("--malloc-keep-bytes", type=int, default=DEFAULT_KEEP_BYTES)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s iopub-keeper %(message)s"
    )
    keep_freed_memory(args.malloc_keep_bytes)
    asyncio.run(run(args.runtime_dir.resolve(), args.window, args.max_bytes, args.idle, args.pace))


if __name__ == "__main__":
    main()
