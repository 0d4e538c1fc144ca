"""Typed application state opened in the lifespan and handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_events.schema_registry import SchemaRegistry

from kernelbus.bus_types import Client, JetStreamContext
from kernelbus_events.consumer import EventConsumer
from kernelbus_events.metrics import EventsMetrics
from kernelbus_events.settings import EventsSettings
from kernelbus_events.store import EventStore
from kernelbus_events.tail import Tail


@dataclass
class AppState:
    settings: EventsSettings
    nc: Client
    js: JetStreamContext
    store: EventStore
    registry: SchemaRegistry
    tail: Tail
    consumer: EventConsumer
    metrics: EventsMetrics
