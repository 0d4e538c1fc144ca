"""Pure logic of the observability helpers: the Prometheus text format, the OTEL_* exporter
choice, and span naming without unbounded ids."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from kernelbus import telemetry
from kernelbus.metrics import MetricsRegistry


def test_counter_gauge_histogram_render_in_prometheus_text_format() -> None:
    registry = MetricsRegistry()
    relayed = registry.counter("relayed_total", 'Messages "relayed".', ("direction",))
    registry.gauge("running", "Kernels running.", read=lambda: 3)
    seconds = registry.histogram("start_seconds", "Start latency.", buckets=(0.5, 1.0))
    relayed.inc(direction="in")
    relayed.inc(2, direction="out")
    seconds.observe(0.75)
    text = registry.render()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert '# HELP relayed_total Messages \\"relayed\\".' in lines
    assert "# TYPE relayed_total counter" in lines
    assert 'relayed_total{direction="in"} 1' in lines
    assert 'relayed_total{direction="out"} 2' in lines
    assert "# TYPE running gauge" in lines and "running 3" in lines
    assert "# TYPE start_seconds histogram" in lines
    assert 'start_seconds_bucket{le="0.5"} 0' in lines
    assert 'start_seconds_bucket{le="1"} 1' in lines
    assert 'start_seconds_bucket{le="+Inf"} 1' in lines
    assert "start_seconds_sum 0.75" in lines and "start_seconds_count 1" in lines


def test_unlabelled_counter_is_exposed_at_zero() -> None:
    registry = MetricsRegistry()
    registry.counter("starts_total", "Starts.")
    assert "starts_total 0" in registry.render().splitlines()


def test_bad_metric_use_is_refused() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c_total", "C.", ("direction",))
    with pytest.raises(ValueError, match="duplicate"):
        registry.counter("c_total", "again")
    with pytest.raises(ValueError, match="invalid"):
        registry.gauge("not-a-name", "dash")
    with pytest.raises(ValueError, match="do not match"):
        counter.inc(kind="x")
    with pytest.raises(ValueError, match="cannot decrease"):
        counter.inc(-1, direction="in")


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
