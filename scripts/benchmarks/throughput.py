"""Scenario 1: throughput end to end, beside a bare aiohttp client; and 3: Redis's work per
delivery, measured during 1a.

Partners p0..p(N-1), partner i subscribed to `evt.i` only; events of types evt.0, evt.1, ...
in turn, so every event is one delivery. Each round measures, side by side: (a) `notifier
router` + one `notifier deliver`, (c) a bare aiohttp client (one ClientSession, partners x
max_in_flight concurrent requests) POSTing bodies shaped like notifier's to the same
endpoints, and (b) `notifier run` alone. Ratios are medians of the rounds' ratios.

Internal mode (the bare client's process): `python -m benchmarks.throughput bare ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from benchmarks.bench import Bench, child_env, progress
from benchmarks.endpoints import (
    run_fast,
)
from benchmarks.figures import (
    MIB,
    Figure,
    Goal,
    Results,
    put_median,
    put_ratio,
)
from benchmarks.measurement import Run, throughput_run
from benchmarks.meters import (
    CpuMeter,
    cpu_text,
)
from benchmarks.sizes import DATA, BenchError

SECTIONS = (1, 3)
FIGURES = [
    Figure("1a", 1, "1a router + 1 deliver", "deliveries/s"),
    Figure("1b", 1, "1b notifier run", "deliveries/s"),
    Figure("1c", 1, "1c bare aiohttp client", "requests/s"),
    Figure("1a/c", 1, "ratio 1a / 1c", "", Goal(">=", 0.7)),
    Figure("1b/c", 1, "ratio 1b / 1c", "", Goal(">=", 0.6)),
    Figure("1cpu.deliver", 1, "CPU per delivery: deliver (1a)", "us"),
    Figure("1cpu.router", 1, "CPU per delivery: router (1a)", "us"),
    Figure("1cpu.run", 1, "CPU per delivery: notifier run (1b)", "us"),
    Figure("1cpu.bare", 1, "CPU per request: bare client (1c)", "us"),
    Figure("1rss.router", 1, "peak RSS: router (1a)", "MiB"),
    Figure("1rss.deliver", 1, "peak RSS: deliver (1a)", "MiB"),
    Figure("1rss.run", 1, "peak RSS: notifier run (1b)", "MiB"),
    Figure("3a", 3, "Redis CPU per delivery (INFO cpu)", "us", Goal("<=", 25)),
    Figure("3b", 3, "Redis commands per delivery", "calls"),
]
#: Commands of the bench itself, left out of the per-delivery counts.
OWN = ("info", "config|resetstat")
TOP = 6


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[1] = (
        f"Throughput: {s.partners} partners x {s.events:,} events, each event to one partner "
        f"(evt.i -> partner i), max_in_flight {s.max_in_flight}, endpoints answer 200 at once"
    )
    results.headings[3] = "Redis per delivery, during 1a (router + 1 deliver)"
    pipeline: list[Run] = []
    bare: list[dict[str, Any]] = []
    alone: list[Run] = []
    for round_ in range(1, s.rounds + 1):
        of = f"round {round_}/{s.rounds}"
        progress(f"1a router + 1 deliver, {of}")
        pipeline.append(await measure(bench, router=("router",), deliver=("deliver",)))
        progress(f"1c bare aiohttp client, {of}")
        bare.append(await bare_run(bench))
        progress(f"1b notifier run, {of}")
        alone.append(await measure(bench, run=("run",)))
        report(results, pipeline, bare, alone)


async def measure(bench: Bench, **roles: tuple[str, ...]) -> Run:
    """A throughput run of the default case with these notifier processes (name -> argv)."""
    await bench.fresh()
    names = list(await bench.partners(bench.sizes.partners))
    procs = {name: bench.notifier(*argv) for name, argv in roles.items()}
    return await throughput_run(bench, names, procs, bench.sizes.events)


async def bare_run(bench: Bench) -> dict[str, Any]:
    s = bench.sizes
    await bench.fresh()
    names = [f"p{i}" for i in range(s.partners)]
    urls = await bench.endpoints.make(dict.fromkeys(names, "ok"))
    proc = bench.spawn(
        "bare client",
        [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            "bare",
            "--per-url",
            str(s.events // s.partners),
            "--concurrency",
            str(s.max_in_flight),
            *urls.values(),
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
    )
    meter = CpuMeter({"bare": proc.pid, "endpoints": bench.endpoint_pid})
    started = time.monotonic()
    cpu = meter.read()
    while proc.popen.poll() is None:
        cpu = meter.read()  # the last reading before the client exits
        bench.check_alive()
        if time.monotonic() - started > s.timeout:
            bench.stop(proc)
            raise BenchError(f"the bare client did not finish within {s.timeout:.0f} s")
        await asyncio.sleep(0.05)
    assert proc.popen.stdout is not None
    out = proc.popen.stdout.read()
    proc.popen.stdout.close()
    if proc.popen.returncode != 0:
        raise BenchError(f"the bare client failed:\n{proc.tail()}")
    result: dict[str, Any] = json.loads(out)
    result["rate"] = result["sent"] / (result["ended"] - result["started"])
    result["cpu"] = cpu_text(cpu, ["bare", "endpoints"])
    return result


def report(
    results: Results, pipeline: list[Run], bare: list[dict[str, Any]], alone: list[Run]
) -> None:
    """Put what the rounds so far measured (called after each round)."""
    last_a, last_b = pipeline[-1], alone[-1]
    put_median(
        results,
        "1a",
        [r.rate for r in pipeline],
        duplicates(pipeline),
        "CPU " + cpu_text(last_a.cpu, ["deliver", "router", "redis", "endpoints"]),
    )
    put_median(
        results,
        "1b",
        [r.rate for r in alone],
        duplicates(alone),
        "CPU " + cpu_text(last_b.cpu, ["run", "redis", "endpoints"]),
    )
    errors = sum(r["errors"] for r in bare)
    put_median(
        results,
        "1c",
        [r["rate"] for r in bare],
        f"{errors} errors" if errors else "",
        "CPU " + bare[-1]["cpu"],
    )
    put_median(results, "1cpu.deliver", [r.us_per_delivery("deliver") for r in pipeline])
    put_median(results, "1cpu.router", [r.us_per_delivery("router") for r in pipeline])
    put_median(results, "1cpu.run", [r.us_per_delivery("run") for r in alone])
    put_median(results, "1cpu.bare", [r["cpu_seconds"] / r["sent"] * 1e6 for r in bare])
    # CPU time per delivery is what the load of other work on the machine moves least
    bare_us = results.get("1cpu.bare").value or 0.0
    for key, runs, us, who in (
        ("1a/c", pipeline, "1cpu.deliver", "1a's deliver"),
        ("1b/c", alone, "1cpu.run", "1b's run"),
    ):
        put_ratio(
            results,
            key,
            [r.rate for r in runs],
            [r["rate"] for r in bare],
            f"by CPU time instead: 1c's per request / {who} per delivery = "
            f"{bare_us / (results.get(us).value or 1.0):.2f}",
        )
    for key, runs, name in (
        ("1rss.router", pipeline, "router"),
        ("1rss.deliver", pipeline, "deliver"),
        ("1rss.run", alone, "run"),
    ):
        results.put(key, max(r.rss[name] for r in runs) / MIB, "VmHWM, the most of the runs")
    report_redis(results, pipeline)


def duplicates(runs: list[Run]) -> str:
    extra = sum(r.extra for r in runs)
    return f"{extra:,} DUPLICATE deliveries" if extra else ""


def report_redis(results: Results, runs: list[Run]) -> None:
    put_redis(results, "3a", "3b", [(r.redis_cpu, r.commands, r.deliveries) for r in runs])


def put_redis(
    results: Results,
    cpu_key: str,
    calls_key: str,
    samples: list[tuple[float, dict[str, tuple[int, float]], int]],
) -> None:
    """Redis's CPU per delivery (`cpu_key`), commands per delivery (`calls_key`) and, after
    it, the TOP commands by time, from (Redis CPU seconds, commandstats, deliveries) of runs."""
    deliveries = sum(n for _, _, n in samples)
    calls: dict[str, int] = {}
    usec: dict[str, float] = {}
    for _, commands, _ in samples:
        for name, (n, us) in commands.items():
            if name not in OWN:
                calls[name] = calls.get(name, 0) + n
                usec[name] = usec.get(name, 0.0) + us
    # one producer XADD per delivery here, at about the average XADD's cost
    producer = usec["xadd"] / calls["xadd"] if calls.get("xadd") else 0.0
    put_median(
        results,
        cpu_key,
        [cpu / n * 1e6 for cpu, _, n in samples],
        f"includes the producer's XADD, about {producer:.1f} us",
    )
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    results.put(
        calls_key,
        sum(calls.values()) / deliveries,
        f"of which {scripts / deliveries:.2f} script calls; commands inside scripts count too",
    )
    for figure in [f for f in results.figures if f.key.startswith(calls_key + ".")]:
        results.figures.remove(figure)
    for name in sorted(usec, key=lambda n: -usec[n])[:TOP]:
        note = " (whole scripts, incl. the commands they run)" if name == "evalsha" else ""
        results.add_after(
            calls_key,
            Figure(
                f"{calls_key}.{name}",
                results.get(calls_key).section,
                f"  {name.upper()}",
                "us/delivery",
                value=usec[name] / deliveries,
                detail=f"{calls[name] / deliveries:.2f} calls{note}",
            ),
        )


# --------------------------------------------------------------------------------------------
# the bare client's process


def body(index: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers shaped and sized like notifier's (the signature is not real)."""
    data = DATA % (index, time.time())
    payload = '{"type":"evt.0","timestamp":"2026-11-24T12:00:00.000Z","data":' + data + "}"
    headers = {
        "content-type": "application/json",
        "user-agent": "notifier/0.1.0",
        "webhook-id": f"msg_1764000000000-{index}",
        "webhook-timestamp": "1764000000",
        "webhook-signature": "v1," + "A" * 43 + "=",
    }
    return payload.encode(), headers


async def bare_client(urls: list[str], per_url: int, concurrency: int) -> dict[str, Any]:
    """POST `per_url` requests to each URL, `concurrency` at a time per URL, through one
    ClientSession set up as notifier's Sender is; report the time and CPU it took."""
    import aiohttp

    payload, headers = body(1)
    remaining = dict.fromkeys(urls, per_url)
    errors = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=10),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:

        async def post(url: str) -> None:
            nonlocal errors
            try:
                async with session.post(
                    url, data=payload, headers=headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    errors += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        async def worker(url: str) -> None:
            while remaining[url] > 0:
                remaining[url] -= 1
                await post(url)

        for url in urls:  # one warm connection per endpoint, as notifier's warm-up gives it
            await post(url)
        started, cpu = time.time(), time.process_time()
        await asyncio.gather(*(worker(u) for u in urls for _ in range(concurrency)))
        ended, cpu = time.time(), time.process_time() - cpu
    return {
        "started": started,
        "ended": ended,
        "sent": per_url * len(urls),
        "errors": errors,
        "cpu_seconds": cpu,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput bare")
    parser.add_argument("--per-url", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args(argv)
    print(json.dumps(run_fast(bare_client(args.urls, args.per_url, args.concurrency))))


if __name__ == "__main__":
    if sys.argv[1:2] != ["bare"]:
        sys.exit("usage: python -m benchmarks.throughput bare --per-url N --concurrency N URL...")
    main(sys.argv[2:])
