"""The measurement most scenarios make, `throughput_run`: warm up, publish, time the
deliveries at the endpoints, and read every process's CPU, RSS and Redis's work meanwhile
(`meters.py`); what it found is a `Run`.

The machine is shared with whatever else runs on it, so figures that are compared are taken
side by side and repeated, and ratios are medians of the ratios of such pairs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.bench import Bench, Proc
from benchmarks.meters import (
    Cpu,
    commands_between,
    commandstats,
    descendants,
    peak_rss,
    redis_cpu,
)


def expected(names: Sequence[str], events: int, first: int = 0) -> dict[str, int]:
    """Deliveries per partner of events first .. first + events - 1, event i going to
    names[i % len(names)] (its type is evt.<i % len(names)>)."""
    counts = dict.fromkeys(names, events // len(names))
    for i in range(first, first + events % len(names)):
        counts[names[i % len(names)]] += 1
    return counts


@dataclass
class Run:
    """What one throughput measurement found."""

    deliveries: int
    seconds: float
    cpu: Cpu
    #: Process name (and "<name> workers", the largest child) -> peak RSS in bytes.
    rss: dict[str, int]
    redis_cpu: float
    commands: dict[str, tuple[int, float]]
    #: Deliveries beyond those expected: duplicates.
    extra: int

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    def us_per_delivery(self, name: str) -> float:
        return self.cpu.seconds.get(name, 0.0) / self.deliveries * 1e6


async def throughput_run(
    bench: Bench,
    names: list[str],
    procs: dict[str, Proc],
    events: int,
    db: int = 0,
    owned: bool = False,
) -> Run:
    """Warm up (one event per partner: processes up, connections open, start-up work done),
    then publish `events` events (event i to partner names[i % len]) and time them from the
    first XADD to the last arrival at the endpoints, watching `procs` and Redis meanwhile."""
    types = [f"evt.{i}" for i in range(len(names))]
    await bench.publish(types, len(types), db, owned=owned)
    await bench.wait_delivered(
        dict.fromkeys(names, 1), f"the warm-up deliveries (are {', '.join(procs)} up?)"
    )
    await bench.settle()
    want = {name: n + 1 for name, n in expected(names, events, first=len(types)).items()}
    meter = bench.meter({name: p.pid for name, p in procs.items()})
    cpu_before = await redis_cpu(bench.redis)
    commands_before = await commandstats(bench.redis)
    started = time.time()
    await bench.publish(types, events, db, first=len(types), owned=owned)
    last = await bench.wait_delivered(want, "the deliveries")
    cpu = meter.read()
    cpu_after = await redis_cpu(bench.redis)
    commands = commands_between(commands_before, await commandstats(bench.redis))
    rss: dict[str, int] = {}
    for name, proc in procs.items():
        rss[name] = peak_rss(proc.pid)
        children = [peak_rss(pid) for pid in descendants(proc.pid)]
        if children:
            rss[name + " workers"] = max(children)
    await asyncio.sleep(0.3)
    counts = await bench.endpoints.counts()
    extra = sum(counts[name][0] for name in names) - sum(want.values())
    return Run(events, last - started, cpu, rss, cpu_after - cpu_before, commands, extra)
