"""The events service's Prometheus series, served at `GET /metrics` (routes.py).

One `EventsMetrics` per app, built in the composition root, so a fresh process (or a test's
app) starts every counter at 0. The consumer counts what it does with each delivered event.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge

from kernelbus.metrics import new_registry, render


class EventsMetrics:
    """The series of one events process, declared once."""

    def __init__(self, tail_subscribers: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = new_registry()
        self.stored = Counter(
            "kernelbus_events_stored_total",
            "Valid events stored (first delivery of an id).",
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "kernelbus_events_dead_lettered_total",
            "Invalid events published to the dead-letter stream.",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "kernelbus_events_duplicates_total",
            "Valid events acked without storing: their id was already stored (a redelivery).",
            registry=self.registry,
        )
        self.store_failures = Counter(
            "kernelbus_events_store_failures_total",
            "Events nak'ed for redelivery because storing or dead-lettering them failed.",
            registry=self.registry,
        )
        Gauge(
            "kernelbus_events_stream_subscribers",
            "Open live-tail (`/api/events/stream`) requests.",
            registry=self.registry,
        ).set_function(tail_subscribers)

    def render(self) -> str:
        return render(self.registry)
