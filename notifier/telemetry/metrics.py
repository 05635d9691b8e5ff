"""Metrics: OpenTelemetry instruments, served as Prometheus text and pushed over OTLP.

Two kinds, so that Grafana never adds one thing up twice:

- What a process does (attempts, failures by kind, latency, requests in flight, rate-limited
  deferrals, events routed, dead letters) is counted by the process that does it; summing
  over processes is right.
- What the deployment holds (backlogs and the age of their oldest message, ingress length and
  lag, open breakers, disabled partners, paces, partner names) is read from Redis by one
  process at a time, the metrics leader (`observer.py`), and only that process reports it;
  dashboards take `max without (instance)` so a change of leader leaves no gap and no double
  count.

Labels stay bounded: a partner by its id (its name only in `notifier_partner_info`), event
types up to MAX_EVENT_TYPES per process (then "other": producers choose types), failures by one
of a few kinds, dead letters by one of a few reasons. The Prometheus names are in
grafana/README.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

from notifier.telemetry.reports import LATENCY_BUCKETS, PartnerTotals
from notifier.telemetry.traces import resource
from notifier.types import DeadReason

if TYPE_CHECKING:
    from notifier.models import Outcome, Taken
    from notifier.telemetry.backlog import Snapshot

MAX_EVENT_TYPES = 200


@cache
def meter_provider(otlp_endpoint: str | None) -> MeterProvider:
    """The process's provider: set up once, as the Prometheus registry is process-wide."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    # no otel_scope_* labels: one scope, and series an operator reads by eye
    readers: list[MetricReader] = [PrometheusMetricReader(scope_info_enabled=False)]
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    views = [
        View(
            instrument_name="notifier.delivery.duration",
            aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS),
        ),
        View(
            instrument_name="notifier.api.request.duration",
            aggregation=ExplicitBucketHistogramAggregation(API_BUCKETS),
        ),
    ]
    provider = MeterProvider(metric_readers=readers, views=views, resource=resource())
    metrics.set_meter_provider(provider)
    return provider


def prometheus_text() -> bytes:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY)


#: Latency buckets (s) of the admin API's requests.
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The methods the admin API's requests are counted by; any other is `other`.
API_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, meter: metrics.Meter) -> None:
        #: The deployment's state, when this process is the metrics leader (observer.py).
        self.snapshot: Snapshot | None = None
        #: Per partner, for `notifier top` (observer.py publishes them).
        self.totals: dict[str, PartnerTotals] = {}
        self.dead_total = 0
        self._types: set[str] = set()
        # counted here per event type and read when collected: an add per routed event was
        # 7 % of the router's CPU
        self._routed: Counter[str] = Counter()
        # counted here per partner and read when collected, as the routed events are: an add
        # per filtered event and partner would cost the router more than the filter
        self._filtered: Counter[str] = Counter()
        self._delivery_instruments(meter)
        self._routing_instruments(meter)
        self._deployment_gauges(meter)
        self._api_instruments(meter)

    def _delivery_instruments(self, m: metrics.Meter) -> None:
        self._attempts = m.create_counter(
            "notifier.delivery.attempts", description="delivery attempts by partner and result"
        )
        self._duration = m.create_histogram(
            "notifier.delivery.duration", unit="ms", description="delivery request latency"
        )
        self._failures = m.create_counter(
            "notifier.delivery.failures",
            description="failed attempts by partner and kind: timeout, connection, tls, ssrf "
            "(refused by the SSRF guard), http_3xx, http_4xx, http_5xx, other",
        )
        # read from the totals when collected, rather than added to on every take and collect
        m.create_observable_up_down_counter(
            "notifier.delivery.in_flight", [self._open], description="requests open now, by partner"
        )
        self._rate_limited = m.create_counter(
            "notifier.rate_limited",
            description="takes deferred because the partner was at its rate limit",
        )

    def _routing_instruments(self, m: metrics.Meter) -> None:
        m.create_observable_counter(
            "notifier.events.routed",
            [self._routed_counts],
            description="ingress events routed, by event type",
        )
        m.create_observable_counter(
            "notifier.filtered",
            [self._filtered_counts],
            description="events a partner subscribes to that its filter kept from it, by partner",
        )
        self._dead = m.create_counter(
            "notifier.dead_letters",
            description="messages and malformed events dead-lettered, by partner and reason",
        )

    def _deployment_gauges(self, m: metrics.Meter) -> None:
        gauges = (
            ("notifier.backlog", "", "messages waiting, by partner and state", self._backlog),
            (
                "notifier.backlog.oldest_age",
                "s",
                "age of the oldest message waiting for a partner",
                self._oldest,
            ),
            ("notifier.ingress.length", "", "entries in the ingress stream", self._ingress),
            ("notifier.ingress.lag", "s", "age of the oldest event not routed yet", self._lag),
            (
                "notifier.partner.breaker_open",
                "",
                "1 while every attempt to the partner fails",
                self._breaker,
            ),
            ("notifier.partner.disabled", "", "1 for a disabled partner", self._disabled),
            (
                "notifier.partner.paced_rate",
                "",
                "requests/s notifier sends a paced partner at most (it said it was overloaded)",
                self._paced_rate,
            ),
            (
                "notifier.partner.paced_concurrency",
                "",
                "requests a paced partner may have open at once",
                self._paced_concurrency,
            ),
            (
                "notifier.partner.info",
                "",
                "1 per partner with work or trouble, labelled with its name and owner",
                self._info,
            ),
            ("notifier.partners", "", "partners registered", self._registered),
        )
        for name, unit, description, callback in gauges:
            m.create_observable_gauge(name, [callback], unit=unit, description=description)

    def _api_instruments(self, m: metrics.Meter) -> None:
        self._api_requests = m.create_counter(
            "notifier.api.requests",
            description="admin API requests by route template, method and status",
        )
        self._api_duration = m.create_histogram(
            "notifier.api.request.duration",
            unit="s",
            description="admin API request latency by route template and method",
        )

    # what this process does

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request the admin API answered; `route` is its route's template (bounded: the
        paths no route takes are one `unmatched`)."""
        method = method if method in API_METHODS else "other"
        self._api_requests.add(1, {"route": route, "method": method, "status": str(status)})
        self._api_duration.record(seconds, {"route": route, "method": method})

    def attempts(self, partner_id: str, settled: Sequence[tuple[Taken, Outcome]]) -> None:
        """Record a batch: one counter add per distinct label set, keeping the hot path cheap."""
        counts = Counter(
            (taken.message.type, outcome.ok, outcome.status) for taken, outcome in settled
        )
        for (event_type, ok, status), count in counts.items():
            self._attempts.add(
                count,
                {
                    "partner": partner_id,
                    "event_type": self._type(event_type),
                    "result": "success" if ok else "failure",
                    "status": str(status) if status is not None else "none",
                },
            )
        totals = self.totals.setdefault(partner_id, PartnerTotals())
        totals.attempts += len(settled)
        where = {"partner": partner_id}
        kinds: Counter[str] = Counter()
        for _, outcome in settled:
            self._duration.record(outcome.latency_ms, where)
            totals.latency[_bucket(outcome.latency_ms)] += 1
            if not outcome.ok:
                kinds[outcome.kind or "other"] += 1
        for kind, count in kinds.items():
            self._failures.add(count, {"partner": partner_id, "kind": kind})
            totals.failures += count

    def in_flight(self, partner_id: str, change: int) -> None:
        self.totals.setdefault(partner_id, PartnerTotals()).in_flight += change

    def _open(self, options: CallbackOptions) -> Iterable[Observation]:
        for partner_id, totals in list(self.totals.items()):
            yield Observation(totals.in_flight, {"partner": partner_id})

    def rate_limited(self, partner_id: str) -> None:
        self._rate_limited.add(1, {"partner": partner_id})
        self.totals.setdefault(partner_id, PartnerTotals()).rate_limited += 1

    def routed(self, event_type: str) -> None:
        self._routed[self._type(event_type)] += 1

    @property
    def routed_total(self) -> int:
        """Events this process routed, every type together (for `notifier top`)."""
        return sum(self._routed.values())

    def _routed_counts(self, options: CallbackOptions) -> Iterable[Observation]:
        for event_type, count in list(self._routed.items()):
            yield Observation(count, {"event_type": event_type})

    def filtered(self, partner_ids: Iterable[str]) -> None:
        """Partners whose filter kept an event from them."""
        for partner_id in partner_ids:
            self._filtered[partner_id] += 1

    def _filtered_counts(self, options: CallbackOptions) -> Iterable[Observation]:
        for partner_id, count in list(self._filtered.items()):
            yield Observation(count, {"partner": partner_id})

    def dead_lettered(self, partner_id: str, reason: DeadReason) -> None:
        """`partner_id` is "" for a malformed event, which belongs to no partner."""
        self._dead.add(1, {"partner": partner_id, "reason": reason})
        self.dead_total += 1

    def _type(self, event_type: str) -> str:
        if event_type in self._types:
            return event_type
        if len(self._types) < MAX_EVENT_TYPES:
            self._types.add(event_type)
            return event_type
        return "other"

    # what the deployment holds (only while this process is the metrics leader)

    def _backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            for state, value in (
                ("new", p.new),
                ("in_flight", p.in_flight),
                ("retrying", p.retrying),
            ):
                yield Observation(value, {"partner": p.id, "state": state})

    def _oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            yield Observation(p.oldest_age_s, {"partner": p.id})

    def _ingress(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.snapshot:
            yield Observation(self.snapshot.ingress_length)

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.snapshot:
            yield Observation(self.snapshot.ingress_lag_s)

    def _breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            yield Observation(int(p.breaker_open), {"partner": p.id})

    def _disabled(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            yield Observation(int(p.disabled), {"partner": p.id})

    def _paced_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            if p.pacing is not None:
                yield Observation(p.pacing.rate, {"partner": p.id})

    def _paced_concurrency(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            if p.pacing is not None:
                yield Observation(p.pacing.concurrency, {"partner": p.id})

    def _info(self, options: CallbackOptions) -> Iterable[Observation]:
        for p in self.snapshot.partners if self.snapshot else ():
            yield Observation(1, {"partner": p.id, "name": p.name, "owner": p.owner or ""})

    def _registered(self, options: CallbackOptions) -> Iterable[Observation]:
        if self.snapshot:
            yield Observation(self.snapshot.partners_registered)


def _bucket(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BUCKETS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BUCKETS)
