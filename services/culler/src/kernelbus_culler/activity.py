"""Consuming the events the culler listens to: kernel_activity (freshens the view between
ticks) and worker_stopped (a worker that left cleanly is not lost).

Every event is validated against `schemas/events` with jupyter_events' `SchemaRegistry`;
an invalid one is logged and skipped, and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from jupyter_events.schema_registry import SchemaRegistry

from kernelbus import events, subjects
from kernelbus.bus_types import DeliverPolicy, JetStreamContext, Msg, PushSubscription
from kernelbus.schemas import InvalidEvent, parse_capsule
from kernelbus.timefmt import utcnow
from kernelbus_culler.view import Activity

log = logging.getLogger(__name__)


@dataclass
class EventSink:
    """Where validated events go; the service passes its view and worker tracker methods."""

    on_activity: Callable[[str, Activity], None]
    on_worker_stopped: Callable[[str], None]


def handle(registry: SchemaRegistry, sink: EventSink, raw: bytes) -> bool:
    """Validate one event and hand it to the sink; False (logged) when it was skipped."""
    try:
        capsule = parse_capsule(registry, raw)
        if capsule.schema_id == events.KERNEL_ACTIVITY:
            sink.on_activity(str(capsule.data["kernel_id"]), Activity.from_event(capsule.data))
        elif capsule.schema_id == events.WORKER_STOPPED:
            sink.on_worker_stopped(str(capsule.data["worker_id"]))
        else:
            return False
    except (InvalidEvent, ValueError) as exc:
        log.warning("skipping invalid event: %s", exc)
        return False
    return True


STOPPED_LOOKBACK = 300.0
"""Seconds of past worker_stopped events read at start: a culler restarted just after a
worker stopped cleanly (leaving kernels for a successor) must not call that worker lost."""


async def subscribe(
    js: JetStreamContext, registry: SchemaRegistry, sink: EventSink
) -> list[PushSubscription]:
    """Ordered, ephemeral consumers. Activity from now on only: the view is rebuilt from the
    registry at start. worker_stopped from `STOPPED_LOOKBACK` seconds ago.

    Not `DeliverPolicy.BY_START_TIME` for the lookback: nats-py re-creates an ordered
    consumer after a NATS restart by start sequence but keeps the start time, which the
    server refuses (err 10094), and the subscription stays dead. All worker_stopped events
    are delivered instead (they are few) and the older ones skipped here.
    """

    async def on_msg(msg: Msg) -> None:
        handle(registry, sink, msg.data)

    since = utcnow() - timedelta(seconds=STOPPED_LOOKBACK)

    async def on_stopped(msg: Msg) -> None:
        if msg.metadata.timestamp >= since:
            handle(registry, sink, msg.data)

    activity = await js.subscribe(
        subjects.event_subject(events.KERNEL_ACTIVITY),
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    stopped = await js.subscribe(
        subjects.event_subject(events.WORKER_STOPPED),
        cb=on_stopped,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    return [activity, stopped]


async def unsubscribe(subscriptions: list[PushSubscription]) -> None:
    """End what `subscribe` started; never raises (NATS may be gone already at shutdown)."""
    for subscription in subscriptions:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
