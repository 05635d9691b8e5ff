"""OpenTelemetry metrics, and traces when an OTLP endpoint is set, per partner.

Metrics are served as Prometheus text on the admin API's /metrics and, with
NOTIFIER_OTLP_ENDPOINT, pushed over OTLP/gRPC, for the Grafana dashboard in grafana/.

Traces exist only with an OTLP endpoint: each event's trace starts where the router fans it out
(a `route` span) and holds one `deliver` span per HTTP attempt to each partner, retries
included, however long after and in whichever delivery process they run. The span context
travels with the message in its partner stream. The standard OTEL_* variables still apply
(OTEL_TRACES_SAMPLER to sample, OTEL_BSP_* and OTEL_METRIC_EXPORT_INTERVAL for batching).
Providers are process-wide and set up once, because the Prometheus registry is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from notifier import __version__

if TYPE_CHECKING:
    from notifier.models import Message, Outcome, Partner, Taken

LATENCY_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def _resource() -> Resource:
    return Resource.create({"service.name": "notifier", "service.version": __version__})


@cache
def tracer_provider(otlp_endpoint: str) -> trace.TracerProvider:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


@cache
def meter_provider(otlp_endpoint: str | None) -> MeterProvider:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    readers: list[MetricReader] = [PrometheusMetricReader()]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    view = View(
        instrument_name="notifier.delivery.duration",
        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
    )
    provider = MeterProvider(metric_readers=readers, views=[view], resource=_resource())
    metrics.set_meter_provider(provider)
    return provider


class Telemetry:
    def __init__(self, meter: metrics.Meter, tracer: trace.Tracer | None = None) -> None:
        #: None without an OTLP endpoint: the hot path then skips span work entirely.
        self.tracer = tracer
        self._attempts = meter.create_counter(
            "notifier.delivery.attempts", description="delivery attempts by partner and result"
        )
        self._duration = meter.create_histogram(
            "notifier.delivery.duration", unit="ms", description="delivery request latency"
        )
        self._dead = meter.create_counter(
            "notifier.dead_letters", description="messages dead-lettered after their schedule"
        )

    @classmethod
    def start(cls, otlp_endpoint: str | None) -> Telemetry:
        tracer = (
            tracer_provider(otlp_endpoint).get_tracer("notifier", __version__)
            if otlp_endpoint
            else None
        )
        return cls(meter_provider(otlp_endpoint).get_meter("notifier"), tracer)

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(metrics.NoOpMeter("notifier"))

    def attempts(self, partner: Partner, settled: Sequence[tuple[Taken, Outcome]]) -> None:
        """Record a batch: one counter add per distinct label set, keeping the hot path cheap."""
        counts = Counter(
            (taken.message.type, outcome.ok, outcome.status) for taken, outcome in settled
        )
        for (event_type, ok, status), count in counts.items():
            self._attempts.add(
                count,
                {
                    "partner": partner.id,
                    "event_type": event_type,
                    "result": "success" if ok else "failure",
                    "status": str(status) if status is not None else "none",
                },
            )
        where = {"partner": partner.id}
        for _, outcome in settled:
            self._duration.record(outcome.latency_ms, where)

    def dead_lettered(self, partner: Partner) -> None:
        self._dead.add(1, {"partner": partner.id})


def prometheus_text() -> bytes:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY)


_propagator = TraceContextTextMapPropagator()


def route_span(tracer: trace.Tracer, message: Message, partners: int) -> trace.Span:
    """The root of an event's trace: its fan-out to `partners` partners."""
    return tracer.start_span(
        "route",
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "notifier.event.type": message.type,
            "notifier.message.id": message.id,
            "notifier.partners": partners,
        },
    )


def traceparent(span: trace.Span) -> str | None:
    """The W3C `traceparent` of a span, to be carried with the message."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def delivery_span(
    tracer: trace.Tracer, partner: Partner, message: Message, attempt: int
) -> trace.Span:
    """One HTTP attempt, a child of its event's `route` span when the message carries one."""
    parent = _propagator.extract({"traceparent": message.trace}) if message.trace else None
    url = urlsplit(partner.url)
    host = url.netloc.rpartition("@")[2]
    return tracer.start_span(
        "deliver",
        context=parent,
        kind=trace.SpanKind.CLIENT,
        attributes={
            "notifier.partner.id": partner.id,
            "notifier.event.type": message.type,
            "notifier.message.id": message.id,
            "notifier.attempt": attempt,
            "http.request.method": "POST",
            # no query string or user info: either may hold a partner's credentials
            "url.full": urlunsplit((url.scheme, host, url.path, "", "")),
            "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        },
    )


def end_delivery_span(span: trace.Span, outcome: Outcome) -> None:
    if outcome.status is not None:
        span.set_attribute("http.response.status_code", outcome.status)
    if not outcome.ok:
        span.set_attribute("error.type", str(outcome.status) if outcome.status else "request")
        span.set_status(trace.StatusCode.ERROR, outcome.error)
    span.end()
