"""`EventStore` on a real SQLite file: idempotent inserts, filters, cursor paging, counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernelbus import events
from kernelbus.schemas import Capsule
from kernelbus.timefmt import parse_timestamp
from kernelbus_events.store import EventFilter, EventStore, NewEvent


def _capsule(kernel_id: str, minute: int, schema_id: str = events.KERNEL_ACTIONS) -> Capsule:
    data = {"action": "shutdown", "msg": "m", "kernel_id": kernel_id}
    return Capsule(schema_id, "1", f"2026-11-21T22:{minute:02d}:00.000000+00:00Z", data)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = EventStore(tmp_path / "sub" / "events.sqlite")
    await opened.open()
    yield opened
    await opened.close()


async def test_an_event_id_is_stored_once(store: EventStore) -> None:
    first = await store.add("e1", "w", _capsule("k1", 1))
    again = await store.add("e1", "w", _capsule("k1", 1))
    assert first is not None and first.capsule["kernel_id"] == "k1"
    assert again is None
    assert await store.counts() == {"stored": 1, "deadletters": 0}


async def test_filters_and_cursor_paging(store: EventStore) -> None:
    for n in range(6):
        await store.add(f"e{n}", None, _capsule(f"k{n % 2}", n))
    await store.add("other", None, _capsule("k0", 9, events.GATEWAY_CLIENT))
    page = await store.query(EventFilter(kernel_id="k0", schema_id=events.KERNEL_ACTIONS), 2)
    assert [e.event_id for e in page] == ["e0", "e2"]
    rest = await store.query(EventFilter(kernel_id="k0", after=page[-1].seq), 10)
    assert [e.event_id for e in rest] == ["e4", "other"]
    since = parse_timestamp("2026-11-21T22:02:00Z").timestamp()
    until = parse_timestamp("2026-11-21T22:04:00Z").timestamp()
    window = await store.query(EventFilter(since=since, until=until), 10)
    assert [e.event_id for e in window] == ["e2", "e3", "e4"]
    assert all(EventFilter(since=since, until=until).matches(e) for e in window)
    assert not EventFilter(kernel_id="k1").matches(window[0])


async def test_deadletters_are_counted_once_per_stream_sequence(store: EventStore) -> None:
    await store.add_deadletter("7", "bad")
    await store.add_deadletter("7", "bad")
    await store.add_deadletter("8", "bad")
    assert (await store.counts())["deadletters"] == 2


async def test_events_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    first = EventStore(path)
    await first.open()
    await first.add("e1", None, _capsule("k", 1))
    await first.close()
    second = EventStore(path)
    await second.open()
    assert [e.event_id for e in await second.query(EventFilter(), 10)] == ["e1"]
    assert await second.add("e1", None, _capsule("k", 1)) is None
    await second.close()


async def test_a_batch_commits_together_and_dedups_within_itself(store: EventStore) -> None:
    batch = [NewEvent("a", None, _capsule("k", 1)), NewEvent("b", None, _capsule("k", 2))]
    added = await store.add_many([*batch, NewEvent("a", None, _capsule("k", 1))])
    assert [e.event_id if e else None for e in added] == ["a", "b", None]
    assert [e is None for e in await store.add_many(batch)] == [True, True]
