"""Scenario 7: one partner's trouble is not another's.

A healthy partner's throughput (router + 1 deliver) alone; beside an outage partner (its
endpoint answers 500) holding a backlog; and beside a rate-limited partner (50/second) with a
backlog and a partner whose endpoint hangs for HANG_SECONDS (the request timeout). The others'
backlogs are routed before the delivery process starts, so they are all due at once. Each
round runs the three side by side; ratios are medians of the rounds' ratios. The rate-limited
partner's rate is taken over at least --window seconds (`smoothed_rate`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.bench import Bench, progress
from benchmarks.endpoints import (
    HANG_SECONDS,
)
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
    put_median,
    put_ratio,
)
from benchmarks.meters import (
    cpu_text,
)
from notifier.ratelimit import parse_rate

SECTIONS = (7,)
RATE = "50/second"
FIGURES = [
    Figure("7a", 7, "7a healthy partner alone", "deliveries/s"),
    Figure("7b", 7, "7b healthy beside an outage partner", "deliveries/s"),
    Figure("7b/a", 7, "ratio 7b / 7a", ""),
    Figure("7c", 7, "7c healthy beside a 50/second + a hanging partner", "deliveries/s"),
    Figure("7c/a", 7, "ratio 7c / 7a", "", Goal(">=", 0.9)),
    Figure("7d", 7, "7d rate-limited partner's rate", "% of limit", Goal(">=", 95)),
    Figure("7e", 7, "7e rate-limited: most requests in any 1 s", "requests", Goal("<=", 50)),
]
WARM = 10


@dataclass
class Other:
    """A partner beside the healthy one."""

    key: str
    kind: str  # the endpoint's answer: ok, fail, hang
    backlog: int
    options: dict[str, Any] = field(default_factory=dict)


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[7] = (
        f"Isolation: router + 1 deliver, a healthy partner receiving "
        f"{s.healthy_events:,} events; outage partner: HTTP 500, "
        f"{s.backlog:,} backlog; {RATE} partner: {s.backlog:,} backlog; "
        f"hanging partner: {HANG_SECONDS:g} s, {s.hang_backlog:,} backlog"
    )
    outage = [Other("outage", "fail", s.backlog)]
    slow = [
        Other("limited", "ok", s.backlog, {"rate_limit": RATE, "max_in_flight": s.max_in_flight}),
        Other("hanging", "hang", s.hang_backlog, {"max_in_flight": s.max_in_flight}),
    ]
    alone: list[dict[str, Any]] = []
    beside_outage: list[dict[str, Any]] = []
    beside_slow: list[dict[str, Any]] = []
    for round_ in range(1, s.rounds + 1):
        for name, others, runs in (
            ("7a alone", [], alone),
            ("7b beside an outage", outage, beside_outage),
            ("7c beside a rate-limited and a hanging partner", slow, beside_slow),
        ):
            progress(f"{name}, round {round_}/{s.rounds}")
            runs.append(await healthy(bench, others))
        report(results, alone, beside_outage, beside_slow)
    await bench.fresh(grace=0.5)  # a graceful stop would wait for the hanging requests


async def healthy(bench: Bench, others: list[Other]) -> dict[str, Any]:
    """The healthy partner's throughput beside `others`, and what the others received."""
    s = bench.sizes
    await bench.fresh(grace=0.5)  # a graceful stop would wait for the hanging requests
    urls = await bench.endpoints.make({"healthy": "ok", **{o.key: o.kind for o in others}})
    await bench.register(
        "healthy", urls["healthy"], ["bench.healthy"], max_in_flight=s.max_in_flight
    )
    ids = {
        o.key: await bench.register(o.key, urls[o.key], [f"bench.{o.key}"], **o.options)
        for o in others
    }
    router = bench.notifier("router")
    for other in others:
        await bench.publish([f"bench.{other.key}"], other.backlog)
    if others:
        await bench.wait_routed({ids[o.key]: o.backlog for o in others})
    deliver = bench.notifier("deliver")
    await bench.publish(["bench.healthy"], WARM)
    await bench.wait_delivered({"healthy": WARM}, "the healthy partner's warm-up (is deliver up?)")
    await asyncio.sleep(1.0)  # the others' load is under way
    meter = bench.meter({"deliver": deliver.pid, "router": router.pid})
    started = time.time()
    await bench.publish(["bench.healthy"], s.healthy_events, first=WARM)
    last = await bench.wait_delivered(
        {"healthy": WARM + s.healthy_events}, "the healthy partner's deliveries"
    )
    result: dict[str, Any] = {
        "rate": s.healthy_events / (last - started),
        "cpu": cpu_text(meter.read(), ["deliver", "router", "redis", "endpoints", "bench"]),
    }
    # what the others received while the healthy partner was measured, and over at least
    # --window seconds from the first healthy XADD (a rate limit needs a longer look)
    result["during"] = {o.key: await bench.endpoints.window(o.key, started, last) for o in others}
    until = max(last, started + s.window)
    await asyncio.sleep(max(0.0, until - time.time()) + 0.1)
    rate = parse_rate(RATE)
    assert rate is not None
    result["over_window"] = {
        o.key: {
            **await bench.endpoints.window(o.key, started, until, rate.window_ms / 1000),
            "seconds": until - started,
        }
        for o in others
    }
    counts = await bench.endpoints.counts()
    result["received"] = {o.key: counts.get(o.key, (0, 0.0))[0] for o in others}
    result["seconds"] = last - started
    return result


def report(
    results: Results,
    alone: list[dict[str, Any]],
    outage: list[dict[str, Any]],
    slow: list[dict[str, Any]],
) -> None:
    rates = [r["rate"] for r in alone]
    put_median(results, "7a", rates, "CPU " + alone[-1]["cpu"])
    attempts = sorted(r["during"]["outage"]["count"] / r["seconds"] for r in outage)
    put_median(
        results,
        "7b",
        [r["rate"] for r in outage],
        f"the outage partner got {attempts[len(attempts) // 2]:,.0f} requests/s meanwhile",
        "CPU " + outage[-1]["cpu"],
    )
    put_ratio(results, "7b/a", [r["rate"] for r in outage], rates)
    hanging = max(r["received"]["hanging"] for r in slow)
    put_median(
        results,
        "7c",
        [r["rate"] for r in slow],
        f"the hanging partner got {hanging} requests (each hangs {HANG_SECONDS:g} s)",
        "CPU " + slow[-1]["cpu"],
    )
    put_ratio(results, "7c/a", [r["rate"] for r in slow], rates)
    rate = parse_rate(RATE)
    assert rate is not None
    per_second = rate.limit * 1000 / rate.window_ms
    limited = [r["over_window"]["limited"] for r in slow]
    achieved = [w["rate"] or w["count"] / w["seconds"] for w in limited]
    put_median(
        results,
        "7d",
        [a / per_second * 100 for a in achieved],
        f"{sorted(achieved)[len(achieved) // 2]:.1f} requests/s of {per_second:g}/s, "
        f"over {limited[-1]['seconds']:.0f} s",
    )
    results.put(
        "7e",
        max(w["max_per_span"] for w in limited),
        f"limit {rate.limit} a {rate.window_ms / 1000:g} s window",
    )
