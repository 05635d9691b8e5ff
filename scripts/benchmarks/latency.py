"""Scenario 2: latency from XADD to arrival at the partner, with `notifier run`.

Every event's data carries `sent_at`, time.time() when it was XADDed; the endpoint process
takes its arrival time (the same clock) minus that. Events are published at a steady rate,
each when due rather than in bursts: first at 200 events/s, then at 80 % of the throughput
1b measured (or, when scenario 1 did not run, of a `notifier run` throughput run made here).
"""

from __future__ import annotations

from benchmarks import throughput
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
    number,
    percentile,
)
from benchmarks.meters import (
    CpuMeter,
    cpu_text,
)
from benchmarks.toolkit import (
    Bench,
    expected,
    progress,
)

SECTIONS = (2,)
FIGURES = [
    Figure("2a.p50", 2, "2a p50 at 200 events/s", "ms"),
    Figure("2a.p99", 2, "2a p99 at 200 events/s", "ms", Goal("<", 10)),
    Figure("2b.p50", 2, "2b p50 at 80 % of 1b's throughput", "ms"),
    Figure("2b.p99", 2, "2b p99 at 80 % of 1b's throughput", "ms"),
]
SHARE = 0.8


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[2] = (
        f"Latency, XADD to arrival at the partner: notifier run, "
        f"{s.partners} partners, each event to one partner"
    )
    full = results.value("1b")
    source = "1b"
    if full is None:
        progress("2 throughput of notifier run (1b did not run)")
        full = (await throughput.measure(bench, run=("run",))).rate
        source = "measured here as 1b is"
    await bench.fresh()
    names = list(await bench.partners(s.partners))
    proc = bench.notifier("run")
    types = [f"evt.{i}" for i in range(len(names))]
    await bench.publish(types, len(types))
    await bench.wait_delivered(dict.fromkeys(names, 1), "the warm-up (is notifier run up?)")
    await bench.settle()
    first = len(types)
    for key, rate, seconds, note in (
        ("2a", s.latency_rate, s.latency_seconds, ""),
        ("2b", SHARE * full, s.high_seconds, f"80 % of {number(full)} deliveries/s ({source})"),
    ):
        progress(f"{key} latency at {rate:,.0f} events/s for {seconds:g} s")
        await bench.endpoints.reset()
        meter = CpuMeter(
            {"run": proc.pid, "redis": bench.redis_pid, "endpoints": bench.endpoint_pid}
        )
        sent = await bench.publish_paced(types, rate, seconds, first)
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
