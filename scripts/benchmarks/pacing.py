"""Scenario 12: a partner over its capacity, paced and not.

The partner takes CAPACITY requests a second and answers 429 above that (then 503; then it
holds them past the request timeout), has no rate limit configured, and is fed RATE events a
second for 20 s (quick: 4 s) by a producer, with a healthy partner fed
HEALTHY_RATE beside it, through a router and two delivery processes. Each kind runs with
NOTIFIER_PACING=1 and again with 0, side by side, with a short retry schedule (SCHEDULE) so
that what runs out of it does so within the run.

From the partner's own answers, in one-second buckets from its first request: paced, it has
*settled* at the end of the last second in which half its requests or more were refused
(never, when that is the run's last second). After that (unpaced: over the whole run): the
share of its capacity it was given (accepted requests / CAPACITY a second) and the share of
requests refused. Dead letters are counted at
the end of the run; the healthy partner's latency is from each event's publish to its arrival.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.bench import Bench, child_env, progress
from benchmarks.capacity import Capacities
from benchmarks.figures import Figure, Goal, Results, percentile
from benchmarks.sizes import BenchError
from notifier.redis import keys

SECTIONS = (12,)
CAPACITY = 50
RATE = 500
HEALTHY_RATE = 100
SCHEDULE = "1s,2s,4s,8s"
TIMEOUT = "2s"
#: (key, label, status above capacity: 0 holds the request past the timeout)
KINDS = (("a", "429", 429), ("b", "503", 503), ("c", "timeout", 0))


def _figures() -> list[Figure]:
    found = []
    for letter, kind, _ in KINDS:
        key, name = f"12{letter}", f"12{letter} {kind}"
        found += [
            Figure(f"{key}.settle", 12, f"{name} paced: time to settle", "s"),
            Figure(f"{key}.used", 12, f"{name} paced: capacity used after", "%", Goal(">=", 85)),
            Figure(f"{key}.refused", 12, f"{name} paced: refused after", "%", Goal("<", 10)),
            Figure(f"{key}.dead", 12, f"{name} paced: dead letters", "messages", Goal("~", 1)),
            Figure(f"{key}.healthy", 12, f"{name} paced: healthy partner p99", "ms"),
            Figure(f"{key}.off.used", 12, f"{name} unpaced: capacity used", "%"),
            Figure(f"{key}.off.refused", 12, f"{name} unpaced: refused", "%"),
            Figure(f"{key}.off.dead", 12, f"{name} unpaced: dead letters", "messages"),
            Figure(f"{key}.off.healthy", 12, f"{name} unpaced: healthy partner p99", "ms"),
        ]
    return found


FIGURES = _figures()


async def run(bench: Bench, results: Results) -> None:
    seconds = bench.sizes.pacing_seconds
    results.headings[12] = (
        f"Pacing: a partner taking {CAPACITY} requests/s, refusing the rest, fed {RATE} "
        f"events/s for {seconds:g} s beside a healthy partner fed {HEALTHY_RATE}/s; router + 2 "
        f"deliver; retry schedule {SCHEDULE}, request timeout {TIMEOUT}"
    )
    capacities = await _start(bench)
    try:
        for letter, kind, status in KINDS:
            for on in (True, False):
                progress(f"12{letter} {kind}, pacing {'on' if on else 'off'}")
                found = await measure(bench, capacities, kind, status, on, seconds)
                report(results, f"12{letter}" + ("" if on else ".off"), found, on)
    finally:
        await capacities.close()
        await bench.fresh(grace=0.5)  # a graceful stop would wait for held requests


async def _start(bench: Bench) -> Capacities:
    """The capacity process, stopped with the bench's other processes."""
    out = bench.tmp / "capacity.json"
    proc = bench.spawn(
        "capacity", [sys.executable, "-m", "benchmarks.capacity", str(out)], env=child_env()
    )
    deadline = time.monotonic() + 30
    while not out.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"the capacity process did not start:\n{proc.tail()}")
        await asyncio.sleep(0.05)
    return Capacities(f"http://127.0.0.1:{json.loads(out.read_text())['control']}")


async def measure(
    bench: Bench, capacities: Capacities, kind: str, status: int, on: bool, seconds: float
) -> dict[str, Any]:
    await bench.fresh(grace=0.5)
    await capacities.reset()
    spec = {"per_second": CAPACITY, "status": status, "hang": 5.0}
    urls = await capacities.make({kind: spec, "healthy": {"per_second": 1e9}})
    await bench.register("paced", urls[kind], ["bench.paced"])
    await bench.register("healthy", urls["healthy"], ["bench.healthy"])
    env = {
        **bench.env(),
        "NOTIFIER_PACING": "1" if on else "0",
        "NOTIFIER_RETRY_SCHEDULE": SCHEDULE,
        "NOTIFIER_REQUEST_TIMEOUT": TIMEOUT,
    }
    for role in ("router", "deliver", "deliver"):
        bench.notifiers.append(bench.spawn(role, [sys.executable, "-m", "notifier", role], env))
    await bench.publish(["bench.healthy"], 1)
    await bench.until(lambda: _arrived(capacities, "healthy", 1), "the warm-up delivery")
    await capacities.reset()
    started = time.time()
    share = RATE // HEALTHY_RATE
    published = await bench.publish_paced(
        ["bench.paced"] * share + ["bench.healthy"], RATE + HEALTHY_RATE, seconds
    )
    ended = time.time()
    bench.check_alive()
    dead = int(await bench.redis.xlen(keys.DEAD))
    healthy_published = published // (share + 1)
    # what was published last arrives a moment later
    await bench.until(
        lambda: _arrived(capacities, "healthy", healthy_published), "the healthy partner's events"
    )
    return {
        "answers": await capacities.answers(kind),
        "healthy": await capacities.answers("healthy"),
        "healthy_published": healthy_published,
        "dead": dead,
        "started": started,
        "ended": ended,
    }


async def _arrived(capacities: Capacities, key: str, count: int) -> bool:
    return len(await capacities.answers(key)) >= count


def settled(answers: list[tuple[float, int, float | None]], ended: float) -> float | None:
    """When the partner settled: the end of its last second with half or more refused (from
    its first request); None when that second is the run's last."""
    if not answers:
        return None
    first = answers[0][0]
    seconds = int(ended - first) + 1
    refused, total = [0] * seconds, [0] * seconds
    for at, status, _ in answers:
        n = min(int(at - first), seconds - 1)
        total[n] += 1
        refused[n] += status != 200
    bad = [n for n in range(seconds) if total[n] and refused[n] * 2 >= total[n]]
    if not bad:
        return first
    if bad[-1] >= seconds - 2:
        return None
    return first + bad[-1] + 1


def report(results: Results, key: str, found: dict[str, Any], on: bool) -> None:
    answers, ended = found["answers"], found["ended"]
    # unpaced is the comparison: today's sender, over the whole run
    at = settled(answers, ended) if on else None
    since = at if at is not None else found["started"]
    after = [a for a in answers if since <= a[0] <= ended]
    accepted = sum(1 for a in after if a[1] == 200)
    used = accepted / (CAPACITY * max(ended - since, 1e-3)) * 100
    refused = (len(after) - accepted) / max(1, len(after)) * 100
    whole = "" if at is not None or not on else "never settled: over the whole run; "
    detail = (
        f"{whole}{accepted:,} accepted, {len(after) - accepted:,} refused of {len(after):,} "
        f"requests over {ended - since:.1f} s; {len(answers):,} requests in all"
    )
    if on:
        results.put(
            f"{key}.settle",
            (at - answers[0][0]) if at is not None else ended - found["started"],
            "from its first request" if at is not None else "never settled",
        )
    results.put(f"{key}.used", used, detail)
    results.put(f"{key}.refused", refused, detail)
    results.put(f"{key}.dead", found["dead"], f"retry schedule {SCHEDULE}")
    latencies = [lat * 1000 for _, _, lat in found["healthy"] if lat is not None]
    results.put(
        f"{key}.healthy",
        percentile(latencies, 99),
        f"{len(latencies):,} of {found['healthy_published']:,} delivered; "
        f"p50 {percentile(latencies, 50):.1f} ms",
    )
