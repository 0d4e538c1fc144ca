"""`kernelbus.bus_kv.Bucket` and `bus.ping`: services see our own outcomes and errors, never
nats-py's (issue 10), against a real nats-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from kernelbus import bus, subjects
from kernelbus.bus_kv import Bucket, KeyChanged
from kernelbus.errors import BusUnavailable
from kernelbus.settings import BusSettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    connection = await bus.connect(BusSettings(nats_url=nats_url), name="bus-kv-test")
    await bus.ensure_infrastructure(connection.jetstream())
    try:
        yield connection
    finally:
        await bus.close(connection)


async def test_missing_and_purged_keys_read_as_none(nc: Client) -> None:
    bucket = await Bucket.open(nc, subjects.SESSIONS_BUCKET)
    key = str(uuid.uuid4())
    assert await bucket.get(key) is None
    await bucket.purge(key)  # nothing to purge is not an error
    revision = await bucket.put(key, b"v")
    entry = await bucket.get(key)
    assert entry is not None and (entry.value, entry.revision) == (b"v", revision)
    assert key in await bucket.keys()
    await bucket.purge(key)
    assert await bucket.get(key) is None


async def test_lost_compare_and_set_is_key_changed(nc: Client) -> None:
    bucket = await Bucket.open(nc, subjects.STARTS_BUCKET)
    key = f"test.{uuid.uuid4()}"
    first = await bucket.create(key, b"1")
    with pytest.raises(KeyChanged):
        await bucket.create(key, b"2")
    second = await bucket.update(key, b"2", last=first)
    with pytest.raises(KeyChanged):
        await bucket.update(key, b"3", last=first)
    with pytest.raises(KeyChanged):
        await bucket.delete(key, last=first)
    await bucket.delete(key, last=second)
    assert await bucket.get(key) is None
    await bucket.purge(key)


async def test_a_closed_connection_is_bus_unavailable(nats_url: str) -> None:
    connection = await bus.connect(BusSettings(nats_url=nats_url), name="bus-kv-closed")
    bucket = await Bucket.open(connection, subjects.SESSIONS_BUCKET)
    await bus.close(connection)
    with pytest.raises(BusUnavailable):
        await bucket.get("anything")


async def test_ping_tells_an_answer_from_no_responder(nc: Client) -> None:
    subject = subjects.api_ping(f"ping-test-{uuid.uuid4().hex[:8]}")
    assert await bus.ping(nc, subject, timeout=5) is False

    async def pong(msg: Msg) -> None:
        await msg.respond(b"")

    sub = await nc.subscribe(subject, cb=pong)
    try:
        assert await bus.ping(nc, subject, timeout=5) is True
    finally:
        await sub.unsubscribe()


async def test_ping_says_what_a_subscriber_that_never_answers_means(nc: Client) -> None:
    """Someone subscribed but silent: unknown by default, alive for a liveness probe
    (`on_timeout=True`, the culler's worker probe); a closed connection cannot tell."""
    subject = subjects.worker_ping(f"ping-test-{uuid.uuid4().hex[:8]}")
    sub = await nc.subscribe(subject)  # never answers
    try:
        assert await bus.ping(nc, subject, timeout=0.2) is None
        assert await bus.ping(nc, subject, timeout=0.2, on_timeout=True) is True
        assert await bus.ping(nc, subject, timeout=0.2, on_timeout=False) is False
    finally:
        await sub.unsubscribe()


async def test_ping_on_a_closed_connection_is_unknown(nats_url: str) -> None:
    connection = await bus.connect(BusSettings(nats_url=nats_url), name="bus-ping-closed")
    await bus.close(connection)
    assert await bus.ping(connection, subjects.worker_ping("any"), timeout=5) is None
