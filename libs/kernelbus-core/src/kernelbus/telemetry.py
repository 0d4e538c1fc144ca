"""OpenTelemetry setup and trace-context propagation through NATS headers.

Exporters follow the standard `OTEL_*` variables: `OTEL_TRACES_EXPORTER` = `none` (default),
`console` or `otlp` (the OTLP exporter package must be installed for the last).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
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
        return ConsoleSpanExporter()
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


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent`/`tracestate` of the current span to NATS headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a NATS message carried (an empty one when it carried none)."""
    return propagate.extract(dict(headers or {}))
