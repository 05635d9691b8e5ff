"""Scenario 0, the headline: throughput on the path users run (`path.py`: every partner
rate-limited, one of them at its limit, a producer id on every event, Redis with AOF
everysec), beside the bare aiohttp client of scenario 1 in the same rounds; Redis's CPU and
commands per delivery on that path, and how many deliveries a second one Redis core serves;
whether the rate limit and the dedupe stayed exact.
"""

from __future__ import annotations

from typing import Any

from benchmarks import path, throughput
from benchmarks.bench import Bench, progress
from benchmarks.figures import Figure, Goal, Results, number, put_median, put_ratio
from benchmarks.meters import cpu_text
from benchmarks.path import BINDING_LIMIT, REPEAT, PathRun

SECTIONS = (0,)
FIGURES = [
    Figure("0a", 0, "0a router + 1 deliver", "deliveries/s"),
    Figure("0b", 0, "0b notifier run", "deliveries/s"),
    Figure("0c", 0, "0c bare aiohttp client (as 1c)", "requests/s"),
    Figure("0a/c", 0, "ratio 0a / 0c", "", Goal(">=", 0.8)),
    Figure("0b/c", 0, "ratio 0b / 0c", "", Goal(">=", 0.7)),
    Figure("0cpu.deliver", 0, "CPU per delivery: deliver (0a)", "us"),
    Figure("0cpu.router", 0, "CPU per delivery: router (0a)", "us"),
    Figure("0cpu.run", 0, "CPU per delivery: notifier run (0b)", "us"),
    Figure("0r", 0, "Redis CPU per delivery (0a)", "us", Goal("<=", 25)),
    Figure("0r.core", 0, "deliveries/s one Redis core serves (0a)", "deliveries/s"),
    Figure("0n", 0, "Redis commands per delivery (0a)", "calls"),
    Figure(
        "0l",
        0,
        f"rate limit: most requests in any 1 s ({BINDING_LIMIT}/second)",
        "requests",
        Goal("<=", BINDING_LIMIT),
    ),
    Figure("0u", 0, "rate limit used", "% of limit", Goal(">=", 95)),
    Figure("0d", 0, "dedupe: deliveries beyond one per id and partner", "requests", Goal("<=", 0)),
]


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[0] = (
        f"The path users run: {s.partners} partners each rate-limited ({path.FREE_LIMIT}, "
        f"not binding) x {s.events:,} events with producer ids, each to one partner, every "
        f"{REPEAT}th id published twice; one more partner held to {BINDING_LIMIT}/second with "
        f"{path.BINDING_SECONDS:g} s of backlog; Redis appendonly yes, appendfsync everysec"
    )
    pipeline: list[PathRun] = []
    bare: list[dict[str, Any]] = []
    alone: list[PathRun] = []
    async with path.persistence(bench):
        for round_ in range(1, s.rounds + 1):
            of = f"round {round_}/{s.rounds}"
            progress(f"0a router + 1 deliver on the users' path, {of}")
            pipeline.append(await measure(bench, router=("router",), deliver=("deliver",)))
            progress(f"0c bare aiohttp client, {of}")
            bare.append(await throughput.bare_run(bench))
            progress(f"0b notifier run on the users' path, {of}")
            alone.append(await measure(bench, run=("run",)))
            report(results, pipeline, bare, alone)


async def measure(bench: Bench, **roles: tuple[str, ...]) -> PathRun:
    await bench.fresh()
    await path.compact([bench.redis])
    names, _ = await path.partners(bench)
    procs = {name: bench.notifier(*argv) for name, argv in roles.items()}
    return await path.path_run(bench, names, procs, bench.sizes.events)


def report(
    results: Results, pipeline: list[PathRun], bare: list[dict[str, Any]], alone: list[PathRun]
) -> None:
    a, b = [p.run for p in pipeline], [p.run for p in alone]
    put_median(
        results,
        "0a",
        [r.rate for r in a],
        "CPU " + cpu_text(a[-1].cpu, ["deliver", "router", "redis", "endpoints"]),
    )
    put_median(
        results,
        "0b",
        [r.rate for r in b],
        "CPU " + cpu_text(b[-1].cpu, ["run", "redis", "endpoints"]),
    )
    put_median(results, "0c", [r["rate"] for r in bare], "CPU " + bare[-1]["cpu"])
    bare_us = [r["cpu_seconds"] / r["sent"] * 1e6 for r in bare]
    put_median(results, "0cpu.deliver", [r.us_per_delivery("deliver") for r in a])
    put_median(results, "0cpu.router", [r.us_per_delivery("router") for r in a])
    put_median(results, "0cpu.run", [r.us_per_delivery("run") for r in b])
    for key, runs, cpu_key in (("0a/c", a, "0cpu.deliver"), ("0b/c", b, "0cpu.run")):
        by_cpu = sorted(bare_us)[len(bare_us) // 2] / (results.get(cpu_key).value or 1.0)
        put_ratio(
            results,
            key,
            [r.rate for r in runs],
            [r["rate"] for r in bare],
            f"by CPU time instead: the bare client's per request / {cpu_key[5:]}'s per delivery "
            f"= {by_cpu:.2f}",
        )
    throughput.put_redis(
        results, "0r", "0n", [(p.run.redis_cpu, p.run.commands, p.deliveries) for p in pipeline]
    )
    redis_us = results.get("0r").value or 1.0
    results.put(
        "0r.core",
        1e6 / redis_us,
        f"1 s of Redis CPU / {number(redis_us)} us (Redis runs commands on one core); AOF included",
    )
    report_exact(results, [*pipeline, *alone])


def report_exact(results: Results, runs: list[PathRun]) -> None:
    """Whether the rate limit and the dedupe stayed exact over every run of 0a and 0b."""
    results.put(
        "0l",
        max(p.binding_most for p in runs),
        f"the most of {len(runs)} runs (0a and 0b), by the partner's own clock",
    )
    put_median(
        results,
        "0u",
        [p.used for p in runs],
        f"{BINDING_LIMIT}/second over {path.BINDING_SECONDS:g} s of backlog, edges smoothed "
        "over its window; while the other partners were served",
    )
    extra = sum(p.run.extra for p in runs) + sum(
        p.binding_received - p.binding_expected for p in runs
    )
    repeated = sum(len(range(0, p.run.deliveries, REPEAT)) for p in runs)
    results.put(
        "0d",
        extra,
        f"{repeated:,} ids published twice over {len(runs)} runs; deliveries beyond one per "
        "id and partner",
    )
