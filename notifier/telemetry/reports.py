"""What each process reports about itself for `notifier top`: its per-partner counters since it
started, published to `notifier:processes` every REPORT_EVERY seconds (`observer.py`). Plain
msgspec shapes, so `top` reads them without loading the metrics machinery.
"""

from __future__ import annotations

import msgspec

#: Latency buckets (ms) of the delivery histogram, and of the per-process totals `top` reads.
LATENCY_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
REPORT_EVERY = 2.0
#: Process reports older than this are ignored by `top`, and removed by the metrics leader.
REPORT_STALE = 60.0


class PartnerTotals(msgspec.Struct):
    """One partner's counts in this process since it started, published for `notifier top`."""

    attempts: int = 0
    failures: int = 0
    rate_limited: int = 0
    in_flight: int = 0
    #: attempts per LATENCY_BUCKETS bucket (and one more for slower)
    latency: list[int] = msgspec.field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


class ProcessReport(msgspec.Struct):
    """What one process publishes to `notifier:processes` for `notifier top`."""

    name: str
    role: str
    at: float
    routed: int = 0
    dead: int = 0
    partners: dict[str, PartnerTotals] = {}
