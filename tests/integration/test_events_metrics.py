"""The events service's Prometheus `/metrics` against a real nats-server and a fresh process:
stored, dead-lettered and duplicate events are counted, and the endpoint needs the token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client

from kernelbus import events, natsserver, subjects
from kernelbus.events import EVENT_ID_HEADER, MSG_ID_HEADER
from kernelbus.metrics import CONTENT_TYPE
from kernelbus.processes import wait_for
from kernelbus.testing.events import EventsProcess, start_events_service
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration

COUNTERS = (
    "kernelbus_events_stored_total",
    "kernelbus_events_dead_lettered_total",
    "kernelbus_events_duplicates_total",
)


@pytest.fixture
async def private_nats(fresh_nats: natsserver.NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(fresh_nats.url)
    yield nc
    await nc.drain()


@pytest.fixture
def sink(services: Services, tmp_path: Path, fresh_nats: natsserver.NatsServer) -> EventsProcess:
    return start_events_service(services, tmp_path / "events.sqlite", nats_url=fresh_nats.url)


def scrape(sink: EventsProcess) -> dict[str, float]:
    """The unlabelled samples of `/metrics`, by series name."""
    response = httpx.get(f"{sink.url}/metrics", headers=sink.headers, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"] == CONTENT_TYPE
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split(" ")
            samples[name] = float(value)
    return samples


def _capsule(msg: str) -> bytes:
    return json.dumps(
        {
            "__timestamp__": "2026-11-21T22:18:21.993029+00:00Z",
            "__schema__": events.GATEWAY_CLIENT,
            "__schema_version__": "1",
            "__metadata_version__": 1,
            "status": "success",
            "msg": msg,
        }
    ).encode()


async def test_fresh_process_counts_from_zero(sink: EventsProcess) -> None:
    samples = await asyncio.to_thread(scrape, sink)
    assert {name: samples[name] for name in COUNTERS} == dict.fromkeys(COUNTERS, 0.0)
    assert samples["kernelbus_events_stream_subscribers"] == 0


async def test_stored_dead_lettered_and_duplicate_events_are_counted(
    sink: EventsProcess, private_nats: Client
) -> None:
    js = private_nats.jetstream()
    subject = subjects.event_subject(events.GATEWAY_CLIENT)
    await js.publish(subject, _capsule("valid"), headers=_ids("ev-1", "msg-1"))
    await js.publish(subject, b"not an event", headers=_ids("ev-2", "msg-2"))
    # Same event id, new message id: JetStream keeps it, the store must not.
    await js.publish(subject, _capsule("valid"), headers=_ids("ev-1", "msg-3"))
    samples: dict[str, float] = {}

    def all_handled() -> bool:
        nonlocal samples
        samples = scrape(sink)
        return sum(samples[name] for name in COUNTERS) >= 3

    await asyncio.to_thread(wait_for, all_handled, 30, "3 counted events", sink.service, 0.1)
    assert samples["kernelbus_events_stored_total"] == 1
    assert samples["kernelbus_events_dead_lettered_total"] == 1
    assert samples["kernelbus_events_duplicates_total"] == 1
    assert (await asyncio.to_thread(sink.stats)) == {"stored": 1, "deadletters": 1}


def _ids(event_id: str, msg_id: str) -> dict[str, str]:
    return {EVENT_ID_HEADER: event_id, MSG_ID_HEADER: msg_id}


async def test_metrics_need_the_token(sink: EventsProcess) -> None:
    async with httpx.AsyncClient(base_url=sink.url, timeout=10) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "token nope"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers=sink.headers)
        assert ok.status_code == 200 and "kernelbus_events_stored_total" in ok.text
