"""Emitting jupyter_events events into the `KERNELBUS_EVENTS` JetStream stream.

`EventPublisher.emit` builds the capsule with jupyter_events' own `EventLogger` (so the
envelope is exactly what jupyter_server writes), validates it synchronously (a
`jsonschema.ValidationError` is a programming error and raises to the caller), then queues it.
A background task publishes the queue in order with `js.publish`, retrying while NATS is
unreachable; the `Nats-Msg-Id` header makes a retried publish count once inside the stream's
duplicate window. The queue is bounded: when NATS stays away long enough to fill it, `emit`
waits for room (back-pressure) rather than dropping an event. `close()` flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from jupyter_events.logger import EventLogger
from nats.js import JetStreamContext

from kernelbus import subjects
from kernelbus.schemas import load_event_schemas
from kernelbus.telemetry import inject_headers

log = logging.getLogger(__name__)

_JS = "https://events.jupyter.org/jupyter_server"
_KB = "https://events.kernelbus.io/kernelbus"

KERNEL_ACTIONS = f"{_JS}/kernel_actions/v1"
GATEWAY_CLIENT = f"{_JS}/gateway_client/v1"
CONTENTS_SERVICE = f"{_JS}/contents_service/v1"
"""Not emitted by Kernelbus; accepted so forwarded jupyter_server events are not refused."""
KERNEL_ACTIVITY = f"{_KB}/kernel_activity/v1"
KERNEL_CULLED = f"{_KB}/kernel_culled/v1"
KERNEL_DIED = f"{_KB}/kernel_died/v1"
WORKER_STARTED = f"{_KB}/worker_started/v1"
WORKER_STOPPED = f"{_KB}/worker_stopped/v1"
WORKER_LOST = f"{_KB}/worker_lost/v1"
SERVICE_RESTARTED = f"{_KB}/service_restarted/v1"
"""Emitted by the embedded launcher when it restarts a process that died."""

EVENT_ID_HEADER = "Kb-Event-Id"
SOURCE_HEADER = "Kb-Source"
MSG_ID_HEADER = "Nats-Msg-Id"


_PAST = {"start": "started", "interrupt": "interrupted", "restart": "restarted"}


def kernel_action(
    action: str,
    kernel_id: str | None,
    kernel_name: str | None,
    error: BaseException | str | None = None,
    *,
    status_code: int | None = None,
) -> dict[str, Any]:
    """A `kernel_actions` payload worded exactly as jupyter_server words it: success with
    "Kernel <id> was <past tense>." (`shutdown` stays `shutdown`), or error with the message
    (an exception's text, else its type; an empty message: "Kernel <action> failed").

    A failed request may not know its kernel (id or name): absent ones are left out.
    `status_code`: the HTTP status the client got, for an error answered over REST.
    """
    data: dict[str, Any] = {"action": action}
    if kernel_id:
        data["kernel_id"] = kernel_id
    if kernel_name:
        data["kernel_name"] = kernel_name
    if error is None:
        data.update(status="success", msg=f"Kernel {kernel_id} was {_PAST.get(action, action)}.")
        return data
    if isinstance(error, BaseException):
        error = str(error) or type(error).__name__
    data["status"] = "error"
    if status_code is not None:
        data["status_code"] = status_code
    data["msg"] = error or f"Kernel {action} failed"
    return data


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
        self, js: JetStreamContext, source: str, max_queue: int = 10_000, retry_max: float = 2.0
    ) -> None:
        self._js = js
        self._source = source
        self._logger = build_logger()
        self._queue: asyncio.Queue[PendingEvent] = asyncio.Queue(maxsize=max_queue)
        self._retry_max = retry_max
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, source: str) -> EventPublisher:
        publisher = cls(js, source)
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
        """Flush for at most `timeout` seconds, then stop; logs what could not be sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self._queue.empty():
            log.error("%d events not published before close", self._queue.qsize())

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._publish_with_retry(event)
            finally:
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
