"""The events service against a real nats-server: stores bus events, dead-letters bad ones,
serves queries, accepts HTTP posts, and loses nothing across a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client

from kernelbus import events, natsserver, subjects
from kernelbus.eventpublisher import EventPublisher
from kernelbus.testing.events import EventsProcess, restart, start_events_service
from kernelbus.testing.plugin import Services

pytestmark = pytest.mark.integration


def _gateway(msg: str) -> dict[str, str]:
    return {"status": "success", "msg": msg}


def _action(kernel_id: str, action: str = "shutdown") -> dict[str, str]:
    return {"action": action, "status": "success", "msg": "m", "kernel_id": kernel_id}


@pytest.fixture
async def private_nats(fresh_nats: natsserver.NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(fresh_nats.url)
    yield nc
    await nc.drain()


@pytest.fixture
def sink(services: Services, tmp_path: Path, fresh_nats: natsserver.NatsServer) -> EventsProcess:
    return start_events_service(services, tmp_path / "events.sqlite", nats_url=fresh_nats.url)


async def test_published_events_are_stored_and_queryable(
    sink: EventsProcess, private_nats: Client
) -> None:
    kernel_id = str(uuid.uuid4())
    publisher = await EventPublisher.open(private_nats.jetstream(), "test")
    for action in ("start", "interrupt", "restart", "shutdown"):
        await publisher.emit(events.KERNEL_ACTIONS, _action(kernel_id, action))
    await publisher.emit(events.GATEWAY_CLIENT, _gateway("other"))
    await publisher.close()
    stored = await asyncio.to_thread(sink.wait_for_events, 4, kernel_id=kernel_id)
    assert [e["event"]["action"] for e in stored] == ["start", "interrupt", "restart", "shutdown"]
    assert all(e["source"] == "test" for e in stored)
    first = await asyncio.to_thread(sink.query, kernel_id=kernel_id, limit=3)
    assert len(first["events"]) == 3 and first["more"]
    rest = await asyncio.to_thread(sink.query, kernel_id=kernel_id, after=first["cursor"])
    assert [e["event"]["action"] for e in rest["events"]] == ["shutdown"]
    by_schema = await asyncio.to_thread(sink.all_events, schema=events.GATEWAY_CLIENT)
    assert [e["event"]["msg"] for e in by_schema] == ["other"]


async def test_queries_need_the_token_and_refuse_bad_filters(sink: EventsProcess) -> None:
    async with httpx.AsyncClient(base_url=sink.url) as client:
        assert (await client.get("/api/events")).status_code == 401
        bad_token = {"Authorization": "token nope"}
        assert (await client.get("/api/events", headers=bad_token)).status_code == 401
        ok = await client.get("/api/events", params={"token": sink.token})
        assert ok.status_code == 200
        bad = await client.get("/api/events", headers=sink.headers, params={"since": "soon"})
        assert bad.status_code == 400 and "since" in bad.text
        assert (await client.get("/api/health/live")).status_code == 200


async def test_invalid_events_are_dead_lettered_and_do_not_block(
    sink: EventsProcess, private_nats: Client
) -> None:
    js = private_nats.jetstream()
    subject = subjects.event_subject(events.GATEWAY_CLIENT)
    capsule = {
        "__timestamp__": "2026-11-21T22:18:21.993029+00:00Z",
        "__schema__": events.GATEWAY_CLIENT,
        "__schema_version__": "1",
        "__metadata_version__": 1,
    }
    bad = [
        b"not json",
        b"[]",
        json.dumps({"status": "success", "msg": "no envelope"}).encode(),
        json.dumps({**capsule, "__schema__": "https://example.org/x/v1", "msg": "m"}).encode(),
        json.dumps({**capsule, "__schema_version__": "9", **_gateway("m")}).encode(),
        json.dumps({**capsule, "status": "meh", "msg": "m"}).encode(),
    ]
    for n, payload in enumerate(bad):
        await js.publish(subject, payload)
        await js.publish(subject, json.dumps({**capsule, **_gateway(f"good-{n}")}).encode())
    stored = await asyncio.to_thread(sink.wait_for_events, len(bad))
    assert [e["event"]["msg"] for e in stored] == [f"good-{n}" for n in range(len(bad))]
    assert (await asyncio.to_thread(sink.stats)) == {"stored": len(bad), "deadletters": len(bad)}
    dead = await js.pull_subscribe(
        subjects.DEAD_LETTER_SUBJECT, stream=subjects.DEAD_LETTER_STREAM.name
    )
    letters = await dead.fetch(len(bad), timeout=5)
    assert [m.data for m in letters] == bad
    assert all(m.headers and m.headers.get("Kb-Error") for m in letters)


async def test_http_post_is_validated_and_stored(sink: EventsProcess) -> None:
    kernel_id = str(uuid.uuid4())
    capsule = {
        "__timestamp__": "2026-11-21T22:18:21.993029+00:00Z",
        "__schema__": events.KERNEL_ACTIONS,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        **_action(kernel_id),
    }
    async with httpx.AsyncClient(base_url=sink.url, headers=sink.headers) as client:
        retry = {"Kb-Event-Id": "post-1"}
        for _ in range(2):
            ok = await client.post("/api/events", json=capsule, headers=retry)
            assert ok.status_code == 202 and ok.json() == {"id": "post-1"}
        refused = await client.post("/api/events", json={**capsule, "action": "fly"})
        assert refused.status_code == 400 and "action" in refused.text
        assert (await client.post("/api/events", content=b"[1]")).status_code == 400
    stored = await asyncio.to_thread(sink.wait_for_events, 1, kernel_id=kernel_id)
    assert [e["id"] for e in stored] == ["post-1"]
    assert (await asyncio.to_thread(sink.stats))["stored"] == 1


async def test_live_tail_streams_new_events(sink: EventsProcess, private_nats: Client) -> None:
    kernel_id = str(uuid.uuid4())
    publisher = await EventPublisher.open(private_nats.jetstream(), "test")
    params = {"kernel_id": kernel_id}
    async with (
        httpx.AsyncClient(base_url=sink.url, headers=sink.headers, timeout=30) as client,
        client.stream("GET", "/api/events/stream", params=params) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        assert await anext(lines) == ": connected"
        await publisher.emit(events.KERNEL_ACTIONS, _action(str(uuid.uuid4())))
        await publisher.emit(events.KERNEL_ACTIONS, _action(kernel_id))
        data = await _next_data(lines)
    await publisher.close()
    assert data["event"]["kernel_id"] == kernel_id


async def _next_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            result: dict[str, Any] = json.loads(line[len("data: ") :])
            return result
    raise AssertionError("stream ended")


async def test_sigkill_mid_stream_loses_nothing_and_stores_once(
    services: Services, sink: EventsProcess, private_nats: Client, fresh_nats: natsserver.NatsServer
) -> None:
    js = private_nats.jetstream()
    total = 600
    killed = asyncio.Event()

    async def produce() -> None:
        publisher = await EventPublisher.open(js, "test")
        for n in range(total):
            if n == total // 2:
                await killed.wait()  # the second half is published while the sink is dead
            await publisher.emit(events.GATEWAY_CLIENT, _gateway(str(n)))
            await publisher.flush()  # one acked event at a time: a steady stream
        await publisher.close()

    producing = asyncio.create_task(produce())
    await asyncio.to_thread(sink.wait_for_events, 20)
    sink.service.kill()
    killed.set()
    stored_at_kill = _count_rows(Path(sink.env["KERNELBUS_EVENTS_DB_PATH"]))
    await producing
    info = await js.stream_info(subjects.EVENTS_STREAM.name)
    assert info.state.messages == total
    again = await asyncio.to_thread(restart, services, sink, fresh_nats.url)
    stored = await asyncio.to_thread(again.wait_for_events, total, 60)
    assert 20 <= stored_at_kill <= total // 2
    assert sorted(int(str(e["event"]["msg"])) for e in stored) == list(range(total))
    assert len({e["id"] for e in stored}) == total
    assert (await asyncio.to_thread(again.stats))["stored"] == total


def _count_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
