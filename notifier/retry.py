"""When a failed message is tried again, or that it is not.

The attempt number is the delivery count Redis keeps for the entry (XCLAIM bumps it), so a
process that restarts knows the attempt without any state of its own.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Sequence

#: Up to this fraction is added to each delay, so a burst of failures does not retry in lockstep.
JITTER = 0.1
#: A Retry-After is honoured up to this long; beyond, a partner could park messages for ever.
MAX_RETRY_AFTER = 86_400.0


def delay(
    attempt: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after failed attempt `attempt` (1-based), or None when it was the last."""
    if attempt > len(schedule):
        return None
    base = schedule[attempt - 1]
    wait = base * (1 + (rng or random).uniform(0, JITTER))
    if retry_after is not None and retry_after > wait:
        wait = min(retry_after, MAX_RETRY_AFTER)
    return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()[:100]
    if value.isascii() and value.isdigit():  # "²" is a digit to str.isdigit, not to float
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a partner's answer: anything
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
