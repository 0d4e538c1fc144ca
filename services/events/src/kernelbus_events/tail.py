"""Live tail: newly stored events fanned out to every open `/api/events/stream` request."""

from __future__ import annotations

import asyncio
import logging

from kernelbus_events.store import StoredEvent

log = logging.getLogger(__name__)


class Tail:
    """In-process broadcaster; a subscriber too slow to keep up is ended, not waited for.

    An ended stream first delivers everything queued for it, then `None`; the SSE client
    reconnects with `Last-Event-ID` and the rest is replayed from the store, so nothing is lost.
    """

    def __init__(self, max_pending: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[StoredEvent | None]] = set()
        self._max_pending = max_pending

    def __len__(self) -> int:
        """Open subscribers (live-tail requests)."""
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[StoredEvent | None]:
        queue: asyncio.Queue[StoredEvent | None] = asyncio.Queue()  # bounded in publish()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[StoredEvent | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: StoredEvent) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() < self._max_pending:
                queue.put_nowait(event)
                continue
            log.warning("live tail subscriber too slow; ending its stream")
            self._subscribers.discard(queue)
            queue.put_nowait(None)
