"""Scenario 6: delivery processes scaling out, `notifier deliver --processes 1` vs 2.

The default case of scenario 1 (router separate), with delivery in one worker under the
supervisor, then in two; rounds side by side. On a 2-core machine the workers share the cores
with Redis, the router and the endpoint process, so this mostly shows what a second process
costs; on a machine with spare cores it shows what it adds.
"""

from __future__ import annotations

from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    MIB,
    Figure,
    Results,
    put_median,
    put_ratio,
)
from benchmarks.measurement import Run
from benchmarks.meters import (
    cpu_text,
)
from benchmarks.throughput import measure

SECTIONS = (6,)
FIGURES = [
    Figure("6a", 6, "6a router + deliver --processes 1", "deliveries/s"),
    Figure("6b", 6, "6b router + deliver --processes 2", "deliveries/s"),
    Figure("6b/a", 6, "ratio 6b / 6a", ""),
    Figure("6rss.worker", 6, "peak RSS: a deliver worker (6b)", "MiB"),
    Figure("6rss.supervisor", 6, "peak RSS: the supervisor (6b)", "MiB"),
]


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[6] = (
        f"Scaling: router + deliver --processes N, {s.partners} partners x "
        f"{s.events:,} events as in 1"
    )
    one: list[Run] = []
    two: list[Run] = []
    for round_ in range(1, s.rounds + 1):
        for n, runs in ((1, one), (2, two)):
            progress(f"6{'ab'[n - 1]} router + deliver --processes {n}, round {round_}/{s.rounds}")
            runs.append(
                await measure(bench, router=("router",), deliver=("deliver", "--processes", str(n)))
            )
        cpu = ["deliver", "router", "redis", "endpoints"]
        put_median(results, "6a", [r.rate for r in one], "CPU " + cpu_text(one[-1].cpu, cpu))
        put_median(
            results,
            "6b",
            [r.rate for r in two],
            "CPU " + cpu_text(two[-1].cpu, cpu) + " (deliver: both workers and the supervisor)",
        )
        put_ratio(results, "6b/a", [r.rate for r in two], [r.rate for r in one])
        results.put(
            "6rss.worker",
            max(r.rss["deliver workers"] for r in two) / MIB,
            "VmHWM, the most of the runs",
        )
        results.put("6rss.supervisor", max(r.rss["deliver"] for r in two) / MIB)
