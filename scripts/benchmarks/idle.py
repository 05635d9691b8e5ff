"""Scenario 5: what an idle `notifier run` costs with 10,000 partners registered.

After start-up (the partners loaded and the router's first janitor pass over every partner's
consumer group done, which the bench sees as the janitor's lock key and then a quiet Redis),
nothing is published for --idle seconds: the process's CPU (/proc), the commands Redis
processed (INFO stats, less the bench's own readings) and redis-server's CPU (INFO cpu).
"""

from __future__ import annotations

import asyncio
import os

from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
)
from benchmarks.meters import (
    CpuMeter,
    commands_between,
    commandstats,
)
from notifier.redis import keys

SECTIONS = (5,)
FIGURES = [
    Figure("5a", 5, "5a notifier run CPU", "% of a core", Goal("<", 1)),
    Figure("5b", 5, "5b Redis commands", "commands/s"),
    Figure("5c", 5, "5c redis-server CPU", "% of a core"),
]


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[5] = (
        f"Idle: notifier run with {s.registered:,} partners registered, "
        f"no events, {s.idle_seconds:g} s"
    )
    await bench.fresh()
    sink = (await bench.endpoints.make({"sink": "ok"}))["sink"]
    progress(f"5 registering {s.registered:,} partners")
    await bench.register_idle(s.registered, sink)
    before = await reading(bench)
    proc = bench.notifier("run")
    await bench.until(lambda: bench.redis.exists(keys.JANITOR), "the router's first janitor pass")
    settled = await bench.settle()
    startup = await reading(bench)
    progress(f"5 idle for {s.idle_seconds:g} s")
    meter = CpuMeter({"run": proc.pid})
    stats = await commandstats(bench.redis)
    await asyncio.sleep(s.idle_seconds)
    cpu = meter.read()
    stats = commands_between(stats, await commandstats(bench.redis))
    after = await reading(bench)
    # each reading is one command; the commandstats readings are two more
    commands = after[0] - startup[0] - 3
    tick = 100 / os.sysconf("SC_CLK_TCK") / cpu.wall
    results.put(
        "5a",
        cpu.percent("run"),
        f"in /proc's clock ticks: {tick:.2f} % each; others {cpu.others:.0f}%",
    )
    top = sorted(((n, c) for n, (c, _) in stats.items() if n != "info"), key=lambda nc: -nc[1])
    results.put(
        "5b",
        commands / cpu.wall,
        ", ".join(f"{name.upper()} {calls / cpu.wall:.2f}/s" for name, calls in top[:4])
        + f"; start-up: {startup[0] - before[0] - 1:,} commands (the bench's polls among them), "
        f"{startup[1] - before[1]:.2f} s of Redis CPU, quiet {settled:.1f} s after the janitor",
    )
    results.put("5c", (after[1] - startup[1]) / cpu.wall * 100)


async def reading(bench: Bench) -> tuple[int, float]:
    """Redis's commands processed and CPU seconds so far, in one command."""
    info = await bench.redis.info("stats", "cpu")
    return (
        int(info["total_commands_processed"]),
        float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
    )
