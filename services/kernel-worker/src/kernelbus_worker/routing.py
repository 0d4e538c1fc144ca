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
