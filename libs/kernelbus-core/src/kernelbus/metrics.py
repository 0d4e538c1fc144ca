"""Prometheus metrics in the text exposition format (version 0.0.4), without a dependency.

Each service declares its series once in a `MetricsRegistry` and serves `registry.render()`
at `/metrics`. Only what Kernelbus needs: counters, gauges (set, or read at scrape time from
a callback) and histograms, with optional labels.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: spans a warm-pool start (tens of ms) to a slow provisioner (a minute)."""

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LabelValues = tuple[str, ...]
Sample = tuple[str, dict[str, str], float]


def _labels(names: tuple[str, ...], given: dict[str, str]) -> LabelValues:
    if set(given) != set(names):
        raise ValueError(f"labels {sorted(given)} do not match {sorted(names)}")
    return tuple(str(given[n]) for n in names)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


@dataclass
class _Metric:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    kind: str = "untyped"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def _label_dict(self, values: LabelValues) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))


@dataclass
class Counter(_Metric):
    """A value that only goes up (messages relayed, kernels started)."""

    kind: str = "counter"
    _values: dict[LabelValues, float] = field(default_factory=dict, repr=False)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        key = _labels(self.labelnames, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(_labels(self.labelnames, labels), 0.0)

    def samples(self) -> Iterator[Sample]:
        if not self._values and not self.labelnames:
            yield self.name, {}, 0.0
        for key, value in sorted(self._values.items()):
            yield self.name, self._label_dict(key), value


@dataclass
class Gauge(_Metric):
    """A value that goes up and down; `read`, when given, is called at every scrape."""

    kind: str = "gauge"
    read: Callable[[], float] | None = None
    _value: float = 0.0

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)

    def value(self) -> float:
        return float(self.read()) if self.read is not None else self._value

    def samples(self) -> Iterator[Sample]:
        yield self.name, {}, self.value()


@dataclass
class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind: str = "histogram"
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    _counts: list[int] = field(default_factory=list, repr=False)
    _sum: float = 0.0
    _count: int = 0

    def __post_init__(self) -> None:
        self.buckets = (*sorted(self.buckets), math.inf)
        self._counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
            self._sum += value
            self._count += 1

    def samples(self) -> Iterator[Sample]:
        for bound, count in zip(self.buckets, self._counts, strict=True):
            yield f"{self.name}_bucket", {"le": _format_value(bound)}, float(count)
        yield f"{self.name}_sum", {}, self._sum
        yield f"{self.name}_count", {}, float(self._count)


class MetricsRegistry:
    """The series one process exposes, rendered in declaration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if not _NAME.match(metric.name) or metric.name in self._metrics:
            raise ValueError(f"invalid or duplicate metric name: {metric.name!r}")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Counter:
        metric = Counter(name, help, tuple(labelnames))
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, read: Callable[[], float] | None = None) -> Gauge:
        metric = Gauge(name, help, read=read)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS
    ) -> Histogram:
        metric = Histogram(name, help, buckets=buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """Every series in the Prometheus text format."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {_escape(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(_sample_line(*sample) for sample in metric.samples())
        return "\n".join(lines) + "\n"


def _sample_line(name: str, labels: dict[str, str], value: float) -> str:
    if not labels:
        return f"{name} {_format_value(value)}"
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{text}}} {_format_value(value)}"
