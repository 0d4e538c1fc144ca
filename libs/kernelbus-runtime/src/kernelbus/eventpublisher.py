"""Emitting jupyter_events events into the `KERNELBUS_EVENTS` JetStream stream.

`EventPublisher.emit` builds the capsule with jupyter_events' own `EventLogger` (so the
envelope is exactly what jupyter_server writes), validates it synchronously (a
`jsonschema.ValidationError` is a programming error and raises to the caller), then queues it.
A background task publishes the queue in order with `js.publish`, retrying while NATS is
unreachable; the `Nats-Msg-Id` header makes a retried publish count once inside the stream's
duplicate window. The queue is bounded: when NATS stays away long enough to fill it, `emit`
waits for room (back-pressure) rather than dropping an event. `close()` flushes; while the bus
is down it waits only `OUTAGE_WAIT` for it, so that a process told to stop during an outage
stops (what is still queued then is logged as lost).

The schema ids, headers and payloads are contracts, in `kernelbus.events`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyter_events.logger import EventLogger
from nats.js import JetStreamContext

from kernelbus import subjects
from kernelbus.events import EVENT_ID_HEADER, MSG_ID_HEADER, SOURCE_HEADER
from kernelbus.schemas import load_event_schemas
from kernelbus.tasks import cancel_and_wait
from kernelbus.telemetry import inject_headers

log = logging.getLogger(__name__)

OUTAGE_WAIT = 1.0
"""Seconds `close()` waits for the queue when the bus is down at that moment: enough for a
reconnect already under way, short of the SIGKILL that `docker compose stop` sends after 10 s."""


class UnknownSchema(ValueError):
    """`emit` was called with a schema id that is not in `schemas/events`."""


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    subject: str
    payload: bytes
    headers: dict[str, str]


def build_logger() -> EventLogger:
    """An `EventLogger` with every Kernelbus schema registered. Its `emit()` returns the
    capsule (jupyter_events >= 0.10), but only when some handler or listener would receive
    it: a `NullHandler` is that handler; the capsule goes to NATS, not to a log."""
    logger = EventLogger()
    for schema in load_event_schemas():
        logger.register_event_schema(schema)
    logger.register_handler(logging.NullHandler())
    return logger


class EventPublisher:
    """Validates and publishes events for one process (`source` names it in a header)."""

    def __init__(
        self,
        js: JetStreamContext,
        source: str,
        max_queue: int = 10_000,
        retry_max: float = 2.0,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._js = js
        self._source = source
        self._connected = connected
        self._logger = build_logger()
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(maxsize=max_queue)
        self._retry_max = retry_max
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0

    @classmethod
    async def open(
        cls, js: JetStreamContext, source: str, connected: Callable[[], bool] = lambda: True
    ) -> EventPublisher:
        """`connected` says whether the bus is up (`Connectivity.connected`): `close` waits
        for the bus only `OUTAGE_WAIT` while it is not."""
        publisher = cls(js, source, connected=connected)
        publisher.start()
        return publisher

    def start(self) -> None:
        """Start the background publishing task (`open` does it for you)."""
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"events-{self._source}")

    def build(self, schema_id: str, data: dict[str, Any]) -> PendingEvent:
        """Validate `data` and wrap it in a jupyter_events capsule, ready to publish."""
        if schema_id not in self._logger.schemas:
            raise UnknownSchema(f"no schema {schema_id!r} in schemas/events")
        capsule = self._logger.emit(schema_id=schema_id, data=data)
        if capsule is None:  # pragma: no cover - only without a handler (see build_logger)
            raise RuntimeError("jupyter_events produced no capsule")
        event_id = uuid.uuid4().hex
        headers = inject_headers(
            {MSG_ID_HEADER: event_id, EVENT_ID_HEADER: event_id, SOURCE_HEADER: self._source}
        )
        payload = json.dumps(capsule, separators=(",", ":")).encode()
        return PendingEvent(event_id, subjects.event_subject(schema_id), payload, headers)

    async def emit(self, schema_id: str, data: dict[str, Any]) -> None:
        """Validate now, publish soon. Returns at once unless the queue is full."""
        event = self.build(schema_id, data)
        await self._queue.put(event)

    async def flush(self) -> None:
        """Wait until every queued event has been acknowledged by JetStream."""
        await self._queue.join()

    async def close(self, timeout: float = 10.0) -> None:
        """Flush for at most `timeout` seconds (`OUTAGE_WAIT` while the bus is down), then
        stop; logs what could not be sent."""
        connected = self._connected()
        wait = timeout if connected else min(timeout, OUTAGE_WAIT)
        try:
            await asyncio.wait_for(self.flush(), wait)
        except TimeoutError:
            unsent = self._queue.qsize() + self._in_flight
            why = "" if connected else " (NATS unavailable)"
            log.error("%d events not published before close%s", unsent, why)
        await cancel_and_wait(self._task)

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            self._in_flight = 1
            try:
                await self._publish_with_retry(event)
            finally:
                self._in_flight = 0
                self._queue.task_done()

    async def _publish_with_retry(self, event: PendingEvent) -> None:
        delay = 0.05
        while True:
            try:
                await self._js.publish(event.subject, event.payload, headers=event.headers)
                return
            except Exception as exc:  # any failure is retried: losing an event is worse
                log.warning("event %s not published yet (%s); retrying", event.event_id, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
