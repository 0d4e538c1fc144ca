"""Server-sent events for the live tail: replay from the store, then follow `Tail`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import Request

from kernelbus_events.store import EventFilter, EventStore, StoredEvent
from kernelbus_events.tail import Tail

KEEPALIVE = 15.0
_REPLAY_PAGE = 500


def format_sse(event: StoredEvent) -> bytes:
    return f"id: {event.seq}\nevent: event\ndata: {json.dumps(event.to_json())}\n\n".encode()


async def sse_events(
    request: Request, store: EventStore, tail: Tail, filters: EventFilter
) -> AsyncIterator[bytes]:
    """Subscribe first, then replay, so nothing stored in between is missed; `seq` dedups."""
    queue = tail.subscribe()
    try:
        yield b": connected\n\n"
        last = filters.after
        if filters.after:
            async for event in _replay(store, filters):
                last = event.seq
                yield format_sse(event)
        async for event in _follow(request, queue):
            if event.seq > last and filters.matches(event):
                last = event.seq
                yield format_sse(event)
            elif event.seq < 0:
                yield b": keepalive\n\n"
    finally:
        tail.unsubscribe(queue)


async def _replay(store: EventStore, filters: EventFilter) -> AsyncIterator[StoredEvent]:
    cursor = filters.after
    while True:
        page = await store.query(_after(filters, cursor), _REPLAY_PAGE)
        for event in page:
            yield event
        if len(page) < _REPLAY_PAGE:
            return
        cursor = page[-1].seq


def _after(filters: EventFilter, cursor: int) -> EventFilter:
    return EventFilter(filters.schema_id, filters.kernel_id, filters.since, filters.until, cursor)


_KEEPALIVE = StoredEvent(-1, "", None, {})


async def _follow(
    request: Request, queue: asyncio.Queue[StoredEvent | None]
) -> AsyncIterator[StoredEvent]:
    """Live events; a `seq == -1` marker on idle periods; ends on disconnect or overflow."""
    while not await request.is_disconnected():
        try:
            event = await asyncio.wait_for(queue.get(), KEEPALIVE)
        except TimeoutError:
            yield _KEEPALIVE
            continue
        if event is None:
            return
        yield event
