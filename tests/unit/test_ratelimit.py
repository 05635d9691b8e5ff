"""Rate limits and isolation against real Redis, real endpoints and real delivery processes."""

from __future__ import annotations

import pytest

from notifier.ratelimit import Rate, parse_rate
from tests.helpers import Received


def busiest_window(received: list[Received], seconds: float = 1.0) -> int:
    """The most requests the endpoint's own clock saw in any sliding window."""
    times = sorted(r.at for r in received)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_rates_are_parsed_by_limits() -> None:
    assert parse_rate("50/second") == Rate(50, 1000)
    assert parse_rate("100/minute") == Rate(100, 60_000)
    assert parse_rate("1000 per hour") == Rate(1000, 3_600_000)
    assert parse_rate(None) is None
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")
