"""Telemetry: metrics (`metrics`), the deployment's backlog (`backlog`), what each process
reports (`reports`) and serves (`observer`), and traces (`traces`).

Importing the package loads none of them: `notifier top` and the other management commands
read backlogs and reports without the metrics and tracing machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry import trace

    from notifier.telemetry.metrics import Metrics


class Telemetry:
    """A process's instruments, and its tracer when an OTLP endpoint is set (the hot path then
    skips span work entirely)."""

    def __init__(self, metrics: Metrics, tracer: trace.Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @classmethod
    def start(cls, otlp_endpoint: str | None) -> Telemetry:
        from notifier import __version__
        from notifier.telemetry.metrics import Metrics, meter_provider
        from notifier.telemetry.traces import tracer_provider

        tracer = (
            tracer_provider(otlp_endpoint).get_tracer("notifier", __version__)
            if otlp_endpoint
            else None
        )
        return cls(Metrics(meter_provider(otlp_endpoint).get_meter("notifier")), tracer)

    @classmethod
    def disabled(cls) -> Telemetry:
        from opentelemetry.metrics import NoOpMeter

        from notifier.telemetry.metrics import Metrics

        return cls(Metrics(NoOpMeter("notifier")))
