"""`EventPublisher`: capsule building, validation, ordered publishing with retries."""

from __future__ import annotations

import json
from typing import Any, cast

import jsonschema
import pytest
from nats.js import JetStreamContext

from kernelbus import events, subjects
from kernelbus.eventpublisher import EventPublisher, UnknownSchema


class FlakyJetStream:
    """Stands in for `JetStreamContext.publish`: fails `failures` times, then records."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts = 0
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("nats away")
        self.published.append((subject, payload, headers))


async def test_emit_publishes_a_jupyter_events_capsule() -> None:
    js = FlakyJetStream()
    publisher = await EventPublisher.open(cast(JetStreamContext, js), "worker-1")
    data = {"action": "start", "status": "success", "msg": "m", "kernel_id": "k1"}
    await publisher.emit(events.KERNEL_ACTIONS, data)
    await publisher.close()
    ((subject, payload, headers),) = js.published
    capsule: dict[str, Any] = json.loads(payload)
    assert subject == subjects.event_subject(events.KERNEL_ACTIONS)
    assert capsule["__schema__"] == events.KERNEL_ACTIONS
    assert capsule["__schema_version__"] == "1"
    assert capsule["__metadata_version__"] == 1
    assert {k: v for k, v in capsule.items() if not k.startswith("__")} == data
    assert headers["Nats-Msg-Id"] == headers["Kb-Event-Id"]
    assert headers["Kb-Source"] == "worker-1"


async def test_invalid_data_raises_and_publishes_nothing() -> None:
    js = FlakyJetStream()
    publisher = await EventPublisher.open(cast(JetStreamContext, js), "w")
    with pytest.raises(jsonschema.ValidationError):
        await publisher.emit(events.KERNEL_ACTIONS, {"action": "start", "status": "success"})
    with pytest.raises(UnknownSchema):
        await publisher.emit("https://example.org/unknown/v1", {})
    await publisher.close()
    assert js.published == []


async def test_publishing_retries_in_order_until_nats_answers() -> None:
    js = FlakyJetStream(failures=3)
    publisher = EventPublisher(cast(JetStreamContext, js), "w", retry_max=0.01)
    publisher.start()
    for n in range(5):
        await publisher.emit(events.GATEWAY_CLIENT, {"status": "success", "msg": str(n)})
    await publisher.close()
    assert [json.loads(p)["msg"] for _, p, _ in js.published] == ["0", "1", "2", "3", "4"]
    assert js.attempts == 8
    ids = [h["Nats-Msg-Id"] for _, _, h in js.published]
    assert len(set(ids)) == 5


async def test_event_ids_are_kept_out_of_the_data() -> None:
    publisher = EventPublisher(cast(JetStreamContext, FlakyJetStream()), "w")
    event = publisher.build(events.GATEWAY_CLIENT, {"status": "success", "msg": "m"})
    assert event.event_id not in event.payload.decode()
