"""What the services share about their Prometheus series, which prometheus_client keeps.

Each service declares its counters, gauges and histograms once, in a `CollectorRegistry` of
its own (never prometheus_client's process-wide default registry, so two services or two
test apps in one process never share a series), and serves `render(registry)` at `/metrics`
as `CONTENT_TYPE`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text exposition format 0.0.4, which every Prometheus scrapes."""

DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: spans a warm-pool start (tens of ms) to a slow provisioner (a minute)."""

# Our series are the documented ones only: no `<name>_created` timestamp beside each counter
# and histogram (prometheus_client's switch is process-wide; nothing else in a Kernelbus
# process exposes prometheus_client series).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


def new_registry() -> CollectorRegistry:
    """An empty registry for one service (or one test's app)."""
    return CollectorRegistry(auto_describe=True)


def render(registry: CollectorRegistry) -> str:
    """Every series of `registry` in the text exposition format."""
    return generate_latest(registry).decode()


class _Unchecked(Collector):
    """A metric registered without its name being checked against the others'."""

    def __init__(self, metric: Collector) -> None:
        self.metric = metric

    def collect(self) -> Iterable[Metric]:
        return self.metric.collect()

    def describe(self) -> Iterable[Metric]:
        return ()


def register_unchecked(registry: CollectorRegistry, metric: Collector) -> None:
    """Expose `metric` (created with `registry=None`) in `registry` without the name check.

    Only for a name that predates prometheus_client here: the api's gauge
    `kernelbus_api_websocket_connections` beside its counter
    `kernelbus_api_websocket_connections_total`. prometheus_client takes a counter's `_total`
    off before comparing names and refuses the pair, which the 0.0.4 text format we serve
    allows and dashboards already use.
    """
    registry.register(_Unchecked(metric))
