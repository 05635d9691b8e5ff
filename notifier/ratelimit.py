"""Per-partner rate limits: parse `50/second` with `limits`, enforce it in `lua/take.lua`.

The window is a sliding log in Redis (one sorted-set member per request) kept by the same
script that hands out messages, so the slot and the message are taken in one atomic step across
every delivery process. `limits`' own moving window cannot share that step, so we use the
package for what it does well here: reading the rate.
"""

from __future__ import annotations

from typing import NamedTuple

from limits import parse

#: Requests reach the partner a little after their slot is taken; widening the window by this
#: much keeps the partner's own clock from ever seeing more than the limit.
MARGIN_MS = 25


class Rate(NamedTuple):
    limit: int
    window_ms: int


def parse_rate(text: str | None) -> Rate | None:
    """`"50/second"` -> Rate(50, 1000). Raise ValueError with a readable message."""
    if not text:
        return None
    try:
        item = parse(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a rate like 50/second, 100/minute or 1000/hour") from None
    if item.amount <= 0:
        raise ValueError("rate_limit must allow at least one request")
    return Rate(item.amount, int(item.get_expiry() * 1000))
