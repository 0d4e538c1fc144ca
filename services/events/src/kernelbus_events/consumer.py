"""The durable JetStream consumer: validate every event, store the valid ones, dead-letter the
rest. An event is acked only after its store commit (one commit per fetched batch), so a crash
redelivers it and the store's id de-duplication keeps it single."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jupyter_events.schema_registry import SchemaRegistry

from kernelbus import bus, subjects
from kernelbus.bus_types import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    JetStreamContext,
    Msg,
    PullSubscription,
)
from kernelbus.errors import describe_error
from kernelbus.events import EVENT_ID_HEADER, MSG_ID_HEADER, SOURCE_HEADER
from kernelbus.schemas import InvalidEvent, parse_capsule
from kernelbus.tasks import cancel_and_wait
from kernelbus_events.metrics import EventsMetrics
from kernelbus_events.settings import EventsSettings
from kernelbus_events.store import EventStore, NewEvent, StoredEvent
from kernelbus_events.tail import Tail

log = logging.getLogger(__name__)

ERROR_HEADER = "Kb-Error"
ORIGINAL_SUBJECT_HEADER = "Kb-Original-Subject"
ORIGINAL_SEQ_HEADER = "Kb-Original-Seq"


class EventConsumer:
    """Pulls `KERNELBUS_EVENTS` in batches until `stop()`."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: EventsSettings,
        store: EventStore,
        registry: SchemaRegistry,
        tail: Tail,
        metrics: EventsMetrics | None = None,
    ) -> None:
        self._js = js
        self._settings = settings
        self._store = store
        self._registry = registry
        self._tail = tail
        self._metrics = metrics or EventsMetrics()
        self._task: asyncio.Task[None] | None = None
        self._sub: PullSubscription | None = None
        self.ready = asyncio.Event()

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._settings.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=self._settings.max_deliver,
            ack_wait=self._settings.ack_wait,
            max_ack_pending=self._settings.batch * 4,
        )

    async def start(self) -> None:
        sub = await self._js.pull_subscribe(
            subjects.EVENTS_STREAM.subjects[0],
            durable=self._settings.consumer,
            stream=subjects.EVENTS_STREAM.name,
            config=self.config(),
        )
        self._sub = sub
        self._task = asyncio.create_task(self._run(sub), name="events-consumer")

    async def stop(self) -> None:
        """Stop pulling. Unacked messages are redelivered to the next consumer (at least once;
        the store de-duplicates)."""
        await cancel_and_wait(self._task)
        if self._sub is not None:
            # The server answers a cancelled fetch later (a 408 status) into the subscription's
            # queue, which nobody reads any more: draining the connection would wait on that
            # queue until its 30 s drain timeout. Unsubscribing discards it.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self, sub: PullSubscription) -> None:
        self.ready.set()
        while True:
            try:
                batch = await bus.fetch(sub, self._settings.batch, timeout=1.0)
            except Exception as exc:  # NATS away: keep pulling once it returns
                log.warning("fetch failed: %s", describe_error(exc))
                await asyncio.sleep(0.5)
                continue
            await self.handle(batch)

    async def handle(self, batch: list[Msg]) -> None:
        """Dead-letter the invalid messages, store the valid ones in one commit, then ack them.

        Never raises, so a bad message never blocks the ones behind it.
        """
        valid: list[tuple[Msg, NewEvent]] = []
        for msg in batch:
            try:
                capsule = parse_capsule(self._registry, msg.data)
            except InvalidEvent as exc:
                await self._dead_letter(msg, str(exc))
                continue
            valid.append((msg, NewEvent(_event_id(msg), _header(msg, SOURCE_HEADER), capsule)))
        if valid:
            await self._store_and_ack(valid)

    async def _store_and_ack(self, valid: list[tuple[Msg, NewEvent]]) -> None:
        try:
            stored = await self._store.add_many([event for _, event in valid])
        except Exception:
            log.exception("storing %d events failed; they will be redelivered", len(valid))
            self._metrics.store_failures.inc(len(valid))
            for msg, _ in valid:
                await msg.nak(delay=1.0)
            return
        for (msg, _), added in zip(valid, stored, strict=True):
            await msg.ack()
            self._count_stored(added)

    def _count_stored(self, added: StoredEvent | None) -> None:
        if added is None:
            self._metrics.duplicates.inc()
            return
        self._metrics.stored.inc()
        self._tail.publish(added)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        seq = str(msg.metadata.sequence.stream)
        headers = {
            ERROR_HEADER: reason[:1000],
            ORIGINAL_SUBJECT_HEADER: msg.subject,
            ORIGINAL_SEQ_HEADER: seq,
            MSG_ID_HEADER: f"deadletter-{seq}",
        }
        try:
            await self._js.publish(subjects.DEAD_LETTER_SUBJECT, msg.data, headers=headers)
            await self._store.add_deadletter(seq, reason)
        except Exception:
            log.exception("dead-lettering event %s failed; it will be redelivered", seq)
            self._metrics.store_failures.inc()
            await msg.nak(delay=1.0)
            return
        self._metrics.dead_lettered.inc()
        log.warning("event %s rejected: %s", seq, reason)
        await msg.term()


def _header(msg: Msg, name: str) -> str | None:
    return (msg.headers or {}).get(name)


def _event_id(msg: Msg) -> str:
    """The publisher's event id, else the stream sequence (unique within the stream)."""
    return (
        _header(msg, EVENT_ID_HEADER)
        or _header(msg, MSG_ID_HEADER)
        or f"seq-{msg.metadata.sequence.stream}"
    )
