"""Scenario 4: routing with many partners registered.

`notifier run`'s throughput to 10 receiving partners (partner i subscribed to evt.i) with only
them registered, and with 9,990 more registered, each subscribed to a type nobody publishes.
The two setups live in two Redis databases, registered once; the runs alternate between them,
and the ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
    put_median,
    put_ratio,
)
from benchmarks.measurement import Run, throughput_run
from benchmarks.meters import (
    cpu_text,
)

SECTIONS = (4,)
FIGURES = [
    Figure("4a", 4, "4a notifier run, 10 partners registered", "deliveries/s"),
    Figure("4b", 4, "4b notifier run, 10,000 registered, same 10 receiving", "deliveries/s"),
    Figure("4b/a", 4, "ratio 4b / 4a", "", Goal(">=", 0.9)),
]
FEW, MANY = 1, 2


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[4] = (
        f"Routing with many registered: notifier run, {s.receiving} "
        f"partners receiving {s.routing_events:,} events"
    )
    await bench.fresh()
    names = list(await bench.partners(s.receiving, db=FEW))
    await bench.partners(s.receiving, db=MANY)
    sink = (await bench.endpoints.make({"sink": "ok"}))["sink"]
    progress(f"4 registering {s.registered - s.receiving:,} more partners")
    await bench.register_idle(s.registered - s.receiving, sink, db=MANY)
    few: list[Run] = []
    many: list[Run] = []
    for round_ in range(1, s.rounds + 1):
        for db, runs in ((FEW, few), (MANY, many)):
            progress(f"4{'ab'[db - 1]} notifier run, round {round_}/{s.rounds}")
            await bench.fresh(flush=False)
            proc = bench.notifier("run", db=db)
            runs.append(await throughput_run(bench, names, {"run": proc}, s.routing_events, db=db))
        put_median(
            results, "4a", [r.rate for r in few], "CPU " + cpu_text(few[-1].cpu, ["run", "redis"])
        )
        put_median(
            results, "4b", [r.rate for r in many], "CPU " + cpu_text(many[-1].cpu, ["run", "redis"])
        )
        put_ratio(results, "4b/a", [r.rate for r in many], [r.rate for r in few])
