"""`EventPublisher` against a real nats-server that goes away and comes back: no event lost,
none duplicated in the stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kernelbus import bus, events, natsserver, subjects
from kernelbus.eventpublisher import EventPublisher
from kernelbus.settings import BusSettings

pytestmark = pytest.mark.integration


async def test_events_emitted_while_nats_is_down_arrive_once(
    fresh_nats: natsserver.NatsServer, tmp_path: Path
) -> None:
    nc = await bus.connect(BusSettings(nats_url=fresh_nats.url), "publisher-test")
    js = nc.jetstream()
    await bus.ensure_infrastructure(js)
    publisher = await EventPublisher.open(js, "test")
    restarted: natsserver.NatsServer | None = None
    try:
        for n in range(10):
            await publisher.emit(events.GATEWAY_CLIENT, {"status": "success", "msg": str(n)})
        await publisher.flush()
        fresh_nats.stop()
        for n in range(10, 20):
            await asyncio.wait_for(
                publisher.emit(events.GATEWAY_CLIENT, {"status": "success", "msg": str(n)}), 1
            )
        restarted = await asyncio.to_thread(
            natsserver.start, fresh_nats.store_dir, fresh_nats.port, "", tmp_path / "nats2.log"
        )
        await asyncio.wait_for(publisher.flush(), 60)
        info = await js.stream_info(subjects.EVENTS_STREAM.name)
        assert info.state.messages == 20
        sub = await js.pull_subscribe(">", stream=subjects.EVENTS_STREAM.name)
        got = [json.loads(m.data)["msg"] for m in await sub.fetch(20, timeout=5)]
        assert got == [str(n) for n in range(20)]
    finally:
        await publisher.close(timeout=1)
        await nc.close()
        if restarted is not None:
            restarted.stop()
