"""Scenario 2: latency from XADD to arrival at the partner, with `notifier run`, on the path
users run (`path.py`: every partner rate-limited, a producer id on every event, AOF everysec).

Every event's data carries `sent_at`, time.time() when it was XADDed; the endpoint process
takes its arrival time (the same clock) minus that. Events are published at a steady rate,
each when due rather than in bursts: first at 200 events/s, then at 70 % of the throughput
0b measured (or, when scenario 0 did not run, of a `notifier run` run made here as 0b is).
"""

from __future__ import annotations

from benchmarks import path, realistic
from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
    number,
    percentile,
)
from benchmarks.measurement import expected
from benchmarks.meters import (
    cpu_text,
)

SECTIONS = (2,)
FIGURES = [
    Figure("2a.p50", 2, "2a p50 at 200 events/s", "ms"),
    Figure("2a.p99", 2, "2a p99 at 200 events/s", "ms", Goal("<", 10)),
    Figure("2b.p50", 2, "2b p50 at 70 % of 0b's throughput", "ms", Goal("<", 10)),
    Figure("2b.p99", 2, "2b p99 at 70 % of 0b's throughput", "ms", Goal("<", 50)),
]
SHARE = 0.7


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[2] = (
        f"Latency, XADD to arrival at the partner: notifier run, {s.partners} partners, each "
        "event to one, on the path of 0 (rate limits, producer ids, AOF everysec)"
    )
    async with path.persistence(bench):
        await measure(bench, results)


async def measure(bench: Bench, results: Results) -> None:
    s = bench.sizes
    full = results.value("0b")
    source = "0b"
    if full is None:
        progress("2 throughput of notifier run (0b did not run)")
        full = (await realistic.measure(bench, run=("run",))).run.rate
        source = "measured here as 0b is"
    await bench.fresh()
    await path.compact([bench.redis])
    names, _ = await path.partners(bench)
    proc = bench.notifier("run")
    types = [f"evt.{i}" for i in range(len(names))]
    await bench.publish(types, len(types))
    await bench.wait_delivered(dict.fromkeys(names, 1), "the warm-up (is notifier run up?)")
    await bench.settle()
    first = len(types)
    share = f"{SHARE:.0%} of {number(full)} deliveries/s ({source})"
    for key, rate, seconds, note in (
        ("2a", s.latency_rate, s.latency_seconds, ""),
        ("2b", SHARE * full, s.high_seconds, share),
    ):
        progress(f"{key} latency at {rate:,.0f} events/s for {seconds:g} s")
        await bench.endpoints.reset()
        meter = bench.meter({"run": proc.pid})
        sent = await bench.publish_paced(types, rate, seconds, first, ids=True)
        cpu = meter.read()
        await bench.wait_delivered(expected(names, sent, first), "the paced deliveries")
        first += sent
        found = [1000 * x for x in await bench.endpoints.latencies(names)]
        detail = "; ".join(
            n
            for n in (
                f"{len(found):,} events at {sent / seconds:,.0f}/s",
                note,
                f"max {number(max(found))} ms",
                f"run's CPU per delivery {cpu.seconds['run'] / sent * 1e6:,.0f} us",
                "CPU " + cpu_text(cpu, ["run", "redis", "endpoints", "bench"]),
            )
            if n
        )
        results.put(f"{key}.p50", percentile(found, 50), detail)
        results.put(f"{key}.p99", percentile(found, 99), detail)
