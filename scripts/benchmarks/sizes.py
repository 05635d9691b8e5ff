"""How big each scenario is (`Sizes`, `QUICK` for CI), the events the bench publishes
(`DATA` XADDed to `INGRESS`), and how a scenario fails (`BenchError`, `WaitTimeout`).
"""

from __future__ import annotations

from dataclasses import dataclass

INGRESS = "notifier:events"
PUBLISH_BATCH = 500
#: A realistic order event, about 300 bytes of JSON; `sent_at` is time.time() at its XADD.
DATA = (
    '{"order_id": %d, "customer": {"id": "cus_7Hq2LmX9", "email": "jane@example.com"}, '
    '"total": 129.95, "currency": "EUR", "items": [{"sku": "SKU-10442", "qty": 2, '
    '"price": 39.99}, {"sku": "SKU-20918", "qty": 1, "price": 49.97}], '
    '"shipping": {"method": "express", "country": "DE"}, "sent_at": %.6f}'
)


class BenchError(RuntimeError):
    """A scenario cannot go on: its figures not measured yet are FAILED."""


class WaitTimeout(BenchError):
    """A wait ran past --timeout: the scenario's figures not measured yet are TIMEOUT."""

    def __init__(self, what: str, got: int, want: int, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {what}: {got:,}/{want:,}")


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; `QUICK` is for CI."""

    partners: int = 50
    events: int = 20_000
    max_in_flight: int = 10
    rounds: int = 3
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    high_seconds: float = 5.0
    registered: int = 10_000
    receiving: int = 10
    routing_events: int = 10_000
    idle_seconds: float = 10.0
    healthy_events: int = 10_000
    backlog: int = 10_000
    hang_backlog: int = 1_000
    window: float = 5.0
    memory_events: int = 100_000
    memory_partners: int = 10
    big_bytes: int = 100 * 1024
    big_partners: int = 100
    owned_registered: int = 10_000
    pacing_seconds: float = 20.0
    timeout: float = 60.0


QUICK = Sizes(
    events=3_000,
    rounds=1,
    latency_seconds=3.0,
    high_seconds=2.0,
    routing_events=1_000,
    idle_seconds=3.0,
    healthy_events=500,
    backlog=1_000,
    hang_backlog=100,
    window=3.0,
    memory_events=5_000,
    owned_registered=2_000,
    pacing_seconds=4.0,
    timeout=30.0,
)
