"""Pure logic of the observability helpers: the Prometheus text format, the OTEL_* exporter
choice, and span naming without unbounded ids."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from kernelbus import metrics, telemetry


def test_counter_gauge_histogram_render_in_prometheus_text_format() -> None:
    registry = metrics.new_registry()
    relayed = Counter("relayed_total", "Messages relayed.", ("direction",), registry=registry)
    Gauge("running", "Kernels running.", registry=registry).set_function(lambda: 3)
    seconds = Histogram("start_seconds", "Start latency.", buckets=(0.5, 1.0), registry=registry)
    relayed.labels(direction="in").inc()
    relayed.labels(direction="out").inc(2)
    seconds.observe(0.75)
    text = metrics.render(registry)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert "# HELP relayed_total Messages relayed." in lines
    assert "# TYPE relayed_total counter" in lines
    assert 'relayed_total{direction="in"} 1.0' in lines
    assert 'relayed_total{direction="out"} 2.0' in lines
    assert "# TYPE running gauge" in lines and "running 3.0" in lines
    assert "# TYPE start_seconds histogram" in lines
    assert 'start_seconds_bucket{le="0.5"} 0.0' in lines
    assert 'start_seconds_bucket{le="1.0"} 1.0' in lines
    assert 'start_seconds_bucket{le="+Inf"} 1.0' in lines
    assert "start_seconds_sum 0.75" in lines and "start_seconds_count 1.0" in lines
    assert not [line for line in lines if "_created" in line]


def test_unlabelled_counter_is_exposed_at_zero() -> None:
    registry = metrics.new_registry()
    Counter("starts_total", "Starts.", registry=registry)
    assert "starts_total 0.0" in metrics.render(registry).splitlines()


def test_each_registry_is_its_own() -> None:
    """Two apps in one process (tests) each count from 0; nothing lands in the default one."""
    first, second = metrics.new_registry(), metrics.new_registry()
    Counter("same_total", "Same name twice.", registry=first).inc()
    Counter("same_total", "Same name twice.", registry=second)
    assert "same_total 1.0" in metrics.render(first).splitlines()
    assert "same_total 0.0" in metrics.render(second).splitlines()
    assert "same_total" not in generate_latest(REGISTRY).decode()
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("same_total", "again", registry=first)


def test_content_type_is_the_0_0_4_text_format() -> None:
    assert metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize("choice", ["", "none", "NONE"])
def test_no_exporter_by_default(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", choice)
    assert telemetry._exporter_from_env() is None


def test_console_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(telemetry._exporter_from_env(), ConsoleSpanExporter)


@pytest.mark.parametrize("choice", ["otlp", "zipkin"])
def test_unavailable_exporter_warns_and_traces_nothing(
    choice: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", choice)
    with caplog.at_level(logging.WARNING, logger="kernelbus.telemetry"):
        assert telemetry._exporter_from_env() is None
    assert "tracing off" in caplog.text


@pytest.mark.parametrize(
    ("subject", "template"),
    [
        ("kb.worker.w-1.start", "kb.worker.*.start"),
        ("kb.kernel.0b6f.cmd", "kb.kernel.*.cmd"),
        ("kb.conn.c1", "kb.conn.*"),
        ("kb.events.x.y", "kb.events.x.y"),
    ],
)
def test_span_names_carry_no_ids(subject: str, template: str) -> None:
    assert telemetry.subject_template(subject) == template


def test_trace_context_round_trips_through_nats_headers() -> None:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        headers = telemetry.inject_headers({})
    assert headers["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    carried = telemetry.extract_context(headers)
    with tracer.start_as_current_span("inner", context=carried) as inner:
        assert isinstance(inner, ReadableSpan) and inner.parent is not None
        assert inner.parent.span_id == span.get_span_context().span_id


def test_api_exposes_its_open_websockets_gauge_beside_the_accepted_counter() -> None:
    from kernelbus_api import metrics as api_metrics

    lines = metrics.render(api_metrics.REGISTRY).splitlines()
    assert "# TYPE kernelbus_api_websocket_connections gauge" in lines
    assert "# TYPE kernelbus_api_websocket_connections_total counter" in lines
