"""OpenTelemetry setup and trace-context propagation through NATS headers.

Exporters follow the standard `OTEL_*` variables: `OTEL_TRACES_EXPORTER` = `none` (default),
`console` or `otlp` (the OTLP exporter package must be installed for the last; without it a
warning says so and tracing stays off). `OTEL_SERVICE_NAME` names the service, and the batch
processor reads `OTEL_BSP_*`. The console exporter writes one JSON object per line on stdout.

A trace crosses NATS as W3C `traceparent`/`tracestate` headers: `bus.request` opens a CLIENT
span and injects it; `bus.responder` opens a SERVER span whose parent is what the message
carried, so an api request and the worker's handling of its command are one trace.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = logging.getLogger(__name__)


def setup_tracing(service_name: str) -> None:
    """Install a tracer provider named after the service, with the exporter OTEL_* asks for."""
    exporter = _exporter_from_env()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _exporter_from_env() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if choice in ("", "none"):
        return None
    if choice == "console":
        return ConsoleSpanExporter(formatter=_one_line)
    if choice == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTEL_TRACES_EXPORTER=otlp but no OTLP exporter is installed; tracing off")
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    log.warning("unknown OTEL_TRACES_EXPORTER=%r; tracing off", choice)
    return None


def _one_line(span: ReadableSpan) -> str:
    return json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n"


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent`/`tracestate` of the current span to NATS headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a NATS message carried (an empty one when it carried none)."""
    return propagate.extract(dict(headers or {}))


def subject_template(subject: str) -> str:
    """`kb.worker.w1.start` -> `kb.worker.*.start`: span names without unbounded ids."""
    parts = subject.split(".")
    if len(parts) >= 3 and parts[1] in ("worker", "kernel", "conn"):
        parts[2] = "*"
    return ".".join(parts)


def _attributes(subject: str) -> dict[str, str]:
    return {"messaging.system": "nats", "messaging.destination.name": subject_template(subject)}


@contextmanager
def request_span(subject: str) -> Iterator[dict[str, str]]:
    """A CLIENT span around one NATS request; yields the headers that carry it."""
    name = f"send {subject_template(subject)}"
    kind = trace.SpanKind.CLIENT
    with tracer("kernelbus.bus").start_as_current_span(
        name, kind=kind, attributes=_attributes(subject)
    ):
        yield inject_headers({})


@contextmanager
def handler_span(subject: str, headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
    """A SERVER span for one command received, child of the context its headers carried."""
    with tracer("kernelbus.bus").start_as_current_span(
        f"handle {subject_template(subject)}",
        context=extract_context(headers),
        kind=trace.SpanKind.SERVER,
        attributes=_attributes(subject),
    ) as span:
        yield span
