"""Traces and metrics over OTLP, received by a real gRPC collector, from a real `notifier run`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from redis.asyncio import Redis

from notifier.config import Settings
from tests.helpers import EndpointFactory, Spawn, eventually, free_port, publish, register


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def Export(self, request: Any, context: Any) -> Any:
        self.spans += [
            span
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.points: dict[str, list[Any]] = {}

    async def Export(self, request: Any, context: Any) -> Any:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    # cumulative: the latest export holds every point so far
                    self.points[metric.name] = list(getattr(metric, kind).data_points)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, Traces, Metrics]]:
    traces, metrics = Traces(), Metrics()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"http://127.0.0.1:{port}", traces, metrics
    await server.stop(None)


def attributes(items: Any) -> dict[str, Any]:
    def value(kv: KeyValue) -> Any:
        kind = kv.value.WhichOneof("value")
        assert kind is not None, f"attribute {kv.key} has no value"
        return getattr(kv.value, kind)

    return {kv.key: value(kv) for kv in items}


async def failing(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=500, text="down")


async def test_an_events_trace_holds_its_fan_out_and_every_attempt(
    redis: Redis,
    settings: Settings,
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
    collector: tuple[str, Traces, Metrics],
) -> None:
    otlp, traces, metrics = collector
    good, bad = await endpoint_factory(), await endpoint_factory(failing)
    # a credential in the query string must not reach the traces
    good_id, _ = await register(
        redis, settings, "good", good.url + "?token=s3cr3t", ["order.created"]
    )
    bad_id, _ = await register(redis, settings, "bad", bad.url, ["order.created"])
    spawn(
        "run",
        extra={
            "NOTIFIER_OTLP_ENDPOINT": otlp,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
            "NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}",
        },
    )
    await publish(redis, "order.created", {"order_id": 7}, event_id="ord-7")
    attempts = len(settings.retry_schedule) + 1
    await good.wait_for(1)
    await bad.wait_for(attempts)

    def spans(name: str) -> list[Span]:
        return [s for s in traces.spans if s.name == name]

    await eventually(
        lambda: len(spans("deliver")) >= 1 + attempts and bool(spans("route")),
        what="the route span and every deliver span",
    )
    # the order's route span (the dead letter's operational event has one of its own)
    [route] = [
        s
        for s in spans("route")
        if attributes(s.attributes)["notifier.event.type"] == "order.created"
    ]
    assert route.kind == Span.SPAN_KIND_CONSUMER
    assert attributes(route.attributes) == {
        "notifier.event.type": "order.created",
        "notifier.message.id": "ord-7",
        "notifier.partners": 2,
    }
    delivered = spans("deliver")
    assert len(delivered) == 1 + attempts
    for span in delivered:
        assert span.trace_id == route.trace_id and span.parent_span_id == route.span_id
        assert span.kind == Span.SPAN_KIND_CLIENT
    by_partner: dict[str, list[dict[str, Any]]] = {}
    for span in delivered:
        found = attributes(span.attributes)
        by_partner.setdefault(found["notifier.partner.id"], []).append(found)
        ok = found["notifier.partner.id"] == good_id
        assert span.status.code == (Status.STATUS_CODE_UNSET if ok else Status.STATUS_CODE_ERROR)
        if not ok:
            assert span.status.message == "HTTP 500: down"
    [good_span] = by_partner[good_id]
    assert good_span["http.response.status_code"] == 200
    assert good_span["url.full"] == good.url  # no query string
    assert "s3cr3t" not in repr(traces.spans)
    assert sorted(a["notifier.attempt"] for a in by_partner[bad_id]) == list(range(1, attempts + 1))
    assert {a["http.response.status_code"] for a in by_partner[bad_id]} == {500}

    def counted() -> dict[tuple[str, str], int]:
        return {
            (attributes(p.attributes)["partner"], attributes(p.attributes)["result"]): p.as_int
            for p in metrics.points.get("notifier.delivery.attempts", [])
        }

    want = {(good_id, "success"): 1, (bad_id, "failure"): attempts}
    await eventually(lambda: counted() == want, what=f"attempt counts {want}, got {counted()}")
    durations = {
        attributes(p.attributes)["partner"]: p.count
        for p in metrics.points["notifier.delivery.duration"]
    }
    assert durations == {good_id: 1, bad_id: attempts}


async def test_a_producers_trace_goes_on_and_log_lines_carry_its_ids(
    redis: Redis,
    settings: Settings,
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
    collector: tuple[str, Traces, Metrics],
) -> None:
    import json
    import signal

    otlp, traces, _ = collector
    bad = await endpoint_factory(failing)
    await register(redis, settings, "bad", bad.url, ["order.created"])
    proc = spawn(
        "run",
        extra={
            "NOTIFIER_OTLP_ENDPOINT": otlp,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}",
            "NOTIFIER_LOG_LEVEL": "info",
        },
    )
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await redis.xadd(
        "notifier:events",
        {
            "type": "order.created",
            "data": '{"order_id": 8}',
            "traceparent": f"00-{trace_id}-{parent_id}-01",
        },
    )
    await bad.wait_for(2)

    def named(name: str) -> list[Span]:
        return [s for s in traces.spans if s.name == name]

    await eventually(
        lambda: bool(named("route")) and len(named("deliver")) >= 2,
        what="the route span and two deliver spans",
    )
    [route] = named("route")
    assert route.trace_id.hex() == trace_id and route.parent_span_id.hex() == parent_id
    assert {s.trace_id.hex() for s in named("deliver")} == {trace_id}

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    retried = [line for line in lines if line["event"] == "delivery failed, will retry"]
    assert retried, err.decode()[-2000:]
    deliver_ids = {s.span_id.hex() for s in named("deliver")}
    for line in retried:
        assert line["trace_id"] == trace_id
        assert line["span_id"] in deliver_ids
