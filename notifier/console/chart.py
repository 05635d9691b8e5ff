"""A partner's deliveries and errors over the last hour, as the bars of a small inline SVG.

Drawn on the server from the per-minute history (`telemetry/history.py`): no script is needed
to see it, and the page's CSP stays strict (the bars are plain shapes, coloured by the
stylesheet). Each minute is one bar, failures at its foot and deliveries stacked on them, with
a tooltip (an SVG `<title>`) giving the minute's numbers.
"""

from __future__ import annotations

import time

import msgspec

from notifier.telemetry.history import Minute

WIDTH = 600
HEIGHT = 120  # of the bars' area; the labels sit below it
GAP = 1.0


class Bar(msgspec.Struct, frozen=True):
    x: float
    width: float
    delivered_y: float
    delivered_height: float
    failed_y: float
    failed_height: float
    label: str


class Chart(msgspec.Struct, frozen=True):
    bars: list[Bar]
    peak: int  # attempts in the busiest minute: the top of the scale
    delivered: int
    failed: int
    width: int = WIDTH
    height: int = HEIGHT


def draw(minutes: list[Minute]) -> Chart:
    peak = max((m.attempts for m in minutes), default=0)
    step = WIDTH / max(1, len(minutes))
    scale = HEIGHT / peak if peak else 0.0
    bars = []
    for n, minute in enumerate(minutes):
        failed = min(minute.failures, minute.attempts)
        delivered = minute.attempts - failed
        failed_height = failed * scale
        delivered_height = delivered * scale
        clock = time.strftime("%H:%M", time.gmtime(minute.at))
        bars.append(
            Bar(
                x=round(n * step, 2),
                width=round(max(step - GAP, 1.0), 2),
                failed_y=round(HEIGHT - failed_height, 2),
                failed_height=round(failed_height, 2),
                delivered_y=round(HEIGHT - failed_height - delivered_height, 2),
                delivered_height=round(delivered_height, 2),
                label=f"{clock} UTC: {delivered} delivered, {failed} failed",
            )
        )
    return Chart(
        bars=bars,
        peak=peak,
        delivered=sum(m.attempts - min(m.failures, m.attempts) for m in minutes),
        failed=sum(min(m.failures, m.attempts) for m in minutes),
    )
