"""Traces, when an OTLP endpoint is set: one trace per event, whichever processes handle it.

Each event's trace starts where the router fans it out (a `route` span; the child of the
producer's span when it sent a W3C `traceparent`) and holds one `deliver` span per HTTP attempt
to each partner, retries included, however long after and in whichever delivery process they
run: the span context travels with the message in its partner stream. The standard OTEL_*
variables still apply (OTEL_TRACES_SAMPLER to sample, OTEL_BSP_* for batching).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from notifier import __version__

if TYPE_CHECKING:
    from notifier.models import Message, Outcome, Partner


def resource() -> Resource:
    return Resource.create({"service.name": "notifier", "service.version": __version__})


@cache
def tracer_provider(otlp_endpoint: str) -> trace.TracerProvider:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


_propagator = TraceContextTextMapPropagator()


def _continued(traceparent: str | None) -> Context | None:
    """The context a W3C `traceparent` carries, for a span that continues its trace; None
    starts a trace of its own."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def route_span(
    tracer: trace.Tracer, message: Message, partners: int, producer: str | None = None
) -> trace.Span:
    """An event's fan-out to `partners` partners: the root of the event's trace, or, when the
    producer sent a W3C `traceparent`, a child of the producer's span, so its trace goes on."""
    return tracer.start_span(
        "route",
        context=_continued(producer),
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
    url = urlsplit(partner.url)
    host = url.netloc.rpartition("@")[2]
    return tracer.start_span(
        "deliver",
        context=_continued(message.trace),
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
