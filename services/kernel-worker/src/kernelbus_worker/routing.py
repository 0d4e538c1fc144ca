"""Which websocket connection a kernel reply goes to, and what a disconnected client is owed.

Pure logic, no sockets. Replies on shell/control/stdin are routed by the `msg_id` of the
request they answer (seen again as `parent_header.msg_id`), never by `session`, which clients
leave empty or share.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class RouteTable:
    """msg_id of a forwarded request -> conn_id that sent it (bounded, oldest dropped first)."""

    max_entries: int = 20_000
    _routes: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def remember(self, msg_id: str, conn_id: str) -> None:
        self._routes[msg_id] = conn_id
        if len(self._routes) > self.max_entries:
            self._routes.popitem(last=False)

    def lookup(self, msg_id: str | None) -> str | None:
        return self._routes.get(msg_id) if msg_id else None

    def forget(self, msg_id: str | None) -> None:
        if msg_id:
            self._routes.pop(msg_id, None)

    def __len__(self) -> int:
        return len(self._routes)


@dataclass
class ReplayBuffer:
    """Messages kept for one session_id while no client is connected (JS `start_buffering`).

    Bounded by count, bytes and age; on overflow the oldest messages go first.
    """

    session_id: str
    max_messages: int
    max_bytes: int
    max_age: float
    _items: deque[tuple[float, bytes]] = field(default_factory=deque)
    _bytes: int = 0
    dropped: int = 0

    def add(self, frame: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._items.append((now, frame))
        self._bytes += len(frame)
        self._trim(now)

    def drain(self, now: float | None = None) -> list[bytes]:
        self._trim(time.monotonic() if now is None else now)
        frames = [frame for _, frame in self._items]
        self._items.clear()
        self._bytes = 0
        return frames

    def __len__(self) -> int:
        return len(self._items)

    def _trim(self, now: float) -> None:
        while self._items and (
            len(self._items) > self.max_messages
            or self._bytes > self.max_bytes
            or now - self._items[0][0] > self.max_age
        ):
            _, frame = self._items.popleft()
            self._bytes -= len(frame)
            self.dropped += 1


@dataclass
class RecentFrames:
    """What was sent to connections in the last `window` seconds, with its addressee (None:
    every connection). If an api replica dies, its clients' share of this is all that can
    have been lost in flight; it seeds their replay buffer."""

    window: float
    max_bytes: int = 64 * 1024 * 1024
    _items: deque[tuple[float, str | None, bytes]] = field(default_factory=deque)
    _bytes: int = 0

    def add(self, target: str | None, frame: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._items.append((now, target, frame))
        self._bytes += len(frame)
        while self._items and (
            now - self._items[0][0] > self.window or self._bytes > self.max_bytes
        ):
            self._bytes -= len(self._items.popleft()[2])

    def since(self, moment: float) -> list[tuple[float, str | None, bytes]]:
        return [item for item in self._items if item[0] >= moment]


@dataclass
class Hold:
    """Output produced while the bus was down, owed to the connections open when it went down.

    Core NATS keeps nothing for a subscriber that is not connected, and after an outage the
    worker and each api replica reconnect in no particular order: output published before a
    replica re-subscribed would be lost. So from the disconnect on, a kernel's output is held
    here instead of published, until each of those connections is attached again (its api
    replica re-attaches every open websocket once it is back) and has been sent its share, in
    order (`take` until empty, then `release`). Connections that never come back are handed
    to the replay buffer of their session (`abandon`).

    `frames` holds `(target, frame)`; target None is iopub (every connection). Bounded like a
    replay buffer; on overflow the oldest frames go first (`dropped` counts them).
    """

    cursors: dict[str, int]
    max_messages: int
    max_bytes: int
    frames: list[tuple[str | None, bytes]] = field(default_factory=list)
    _base: int = 0
    _bytes: int = 0
    dropped: int = 0

    def waiting_for(self, conn_id: str) -> bool:
        return conn_id in self.cursors

    @property
    def waiting(self) -> bool:
        return bool(self.cursors)

    def add(self, target: str | None, frame: bytes) -> None:
        self.frames.append((target, frame))
        self._bytes += len(frame)
        while self.frames and (
            len(self.frames) > self.max_messages or self._bytes > self.max_bytes
        ):
            self._bytes -= len(self.frames.pop(0)[1])
            self._base += 1
            self.dropped += 1

    @property
    def end(self) -> int:
        """The cursor just past the last frame held (cursors count from the first frame
        ever held, dropped ones included)."""
        return self._base + len(self.frames)

    def take(self, conn_id: str) -> list[bytes]:
        """The frames for `conn_id` not taken yet, in order; advances its cursor."""
        start = max(self.cursors.get(conn_id, 0), self._base)
        end = self._base + len(self.frames)
        self.cursors[conn_id] = end
        return [
            frame
            for target, frame in self.frames[start - self._base :]
            if target is None or target == conn_id
        ]

    def release(self, conn_id: str) -> None:
        """`conn_id` is caught up: from now on it is sent output directly."""
        self.cursors.pop(conn_id, None)

    def transfer(self, old: str, new: str) -> None:
        """A client came back on a new connection of the same session: it is owed what the
        old connection was (frames addressed to the old one now go to the new one)."""
        self.cursors[new] = self.cursors.pop(old)
        self.frames = [(new if t == old else t, f) for t, f in self.frames]

    def abandon(self, conn_id: str) -> list[bytes]:
        """Everything still owed to a connection that did not come back; it is released."""
        if conn_id not in self.cursors:
            return []
        owed = self.take(conn_id)
        self.release(conn_id)
        return owed
