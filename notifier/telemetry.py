"""OpenTelemetry metrics (and traces when an OTLP endpoint is set), per partner.

Metrics are served as Prometheus text on the admin API's /metrics and, with
NOTIFIER_OTLP_ENDPOINT, pushed over OTLP with traces, for the Grafana dashboard in grafana/.
The meter provider is process-wide, set up once, because the Prometheus registry is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from notifier import __version__

if TYPE_CHECKING:
    from notifier.delivery import Taken
    from notifier.models import Partner
    from notifier.sender import Outcome

LATENCY_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


@cache
def meter_provider(otlp_endpoint: str | None) -> MeterProvider:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    readers: list[MetricReader] = [PrometheusMetricReader()]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    view = View(instrument_name="notifier.delivery.duration",
                aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS))
    provider = MeterProvider(
        metric_readers=readers, views=[view],
        resource=Resource.create({"service.name": "notifier", "service.version": __version__}))
    metrics.set_meter_provider(provider)
    return provider


class Telemetry:
    def __init__(self, meter: metrics.Meter) -> None:
        self._attempts = meter.create_counter(
            "notifier.delivery.attempts", description="delivery attempts by partner and result")
        self._duration = meter.create_histogram(
            "notifier.delivery.duration", unit="ms", description="delivery request latency")
        self._dead = meter.create_counter(
            "notifier.dead_letters", description="messages dead-lettered after their schedule")

    @classmethod
    def start(cls, otlp_endpoint: str | None) -> Telemetry:
        return cls(meter_provider(otlp_endpoint).get_meter("notifier"))

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(metrics.NoOpMeter("notifier"))

    def attempts(self, partner: Partner, settled: Sequence[tuple[Taken, Outcome]]) -> None:
        """Record a batch: one counter add per distinct label set, keeping the hot path cheap."""
        counts = Counter((taken.message.type, outcome.ok, outcome.status)
                         for taken, outcome in settled)
        for (event_type, ok, status), count in counts.items():
            self._attempts.add(count, {
                "partner": partner.id, "event_type": event_type,
                "result": "success" if ok else "failure",
                "status": str(status) if status is not None else "none"})
        where = {"partner": partner.id}
        for _, outcome in settled:
            self._duration.record(outcome.latency_ms, where)

    def dead_lettered(self, partner: Partner) -> None:
        self._dead.add(1, {"partner": partner.id})


def prometheus_text() -> bytes:
    from prometheus_client import REGISTRY, generate_latest
    return generate_latest(REGISTRY)
