"""Per-partner rate limits: parse `50/second` with `limits`, enforce it in `lua/take.lua`.

The window lives in Redis as counters over slices of it (`lua/window.lua`), kept by the same
script that hands out messages, so the slot and the message are taken in one atomic step across
every delivery process. `limits`' own moving window cannot share that step, so we use the
package for what it does well here: reading the rate.
"""

from __future__ import annotations

from typing import NamedTuple

from limits import parse

#: Bounds that keep every number the Lua scripts compute exact (doubles hold 2^53) and every
#: PEXPIRE in range; a limit beyond them is refused when the partner is saved.
MAX_LIMIT = 1_000_000
MAX_WINDOW_MS = 86_400_000
MAX_TEXT = 40
#: Slices of a window (lua/window.lua's SLICES): the oldest, partly out of the window, counts
#: whole, so a partner held to its limit gets SLICES / (SLICES + 1) of it.
SLICES = 50


def slice_of(ms: int, window_ms: int) -> int:
    """The slice of the window a time falls in, as lua/window.lua counts it."""
    return ms // max(1, window_ms // SLICES)


class Rate(NamedTuple):
    limit: int
    window_ms: int


def parse_rate(text: str | None) -> Rate | None:
    """`"50/second"` -> Rate(50, 1000). Raise ValueError saying what to write instead."""
    if not text:
        return None
    hint = "write a rate like 50/second, 100/minute or 1000/hour"
    if len(text) > MAX_TEXT:
        raise ValueError(f"rate_limit is longer than {MAX_TEXT} characters; {hint}")
    try:
        item = parse(text)
        window_ms = int(item.get_expiry() * 1000)
    except (ValueError, OverflowError):
        raise ValueError(f"rate_limit {text!r} is not a rate; {hint}") from None
    if not 1 <= item.amount <= MAX_LIMIT:
        raise ValueError(f"rate_limit must allow 1 to {MAX_LIMIT:,} requests per window")
    if not 1000 <= window_ms <= MAX_WINDOW_MS:
        raise ValueError("rate_limit's window must be from 1 second to 24 hours")
    return Rate(item.amount, window_ms)
