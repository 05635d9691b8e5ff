"""Benchmark notifier on this machine and print one table of figures.

Everything runs for real: a redis-server of the bench's own on a free port (no persistence
unless --aof), the partner endpoints in a separate process, and notifier as `notifier router`,
`deliver` and `run` subprocesses. Partners are registered through notifier's Store, events are
XADDed to the ingress stream as any producer does, and deliveries are counted (and timed)
where they land: at the endpoints.

Figures (README.md, "Benchmarks", says what each means):
 0. the path users run: rate limits, producer ids, AOF; throughput beside the bare client,
    Redis's CPU and commands per delivery, the rate limit and the dedupe exact
 1. throughput: router + 1 deliver, notifier run, and a bare aiohttp client, side by side
 2. latency from XADD to the partner at 200 events/s and at 70 % of 0b's throughput, on 0's path
 3. Redis CPU and commands per delivery, during 1a
 4. routing with 10,000 partners registered and 10 receiving, vs 10 registered
 5. an idle notifier run with 10,000 partners: its CPU, Redis commands/s
 6. scaling: deliver --processes 1 vs 2
 7. isolation: a healthy partner beside an outage partner, beside a rate-limited and a
    hanging one; the rate-limited partner's rate
 8. Redis memory per backlogged message, after delivery, per copy of a 100 KiB fan-out
 9. choosing what partners receive: schema checks (three validators), a filter, a per-type
    transform, per event; routing with 10,000 partners, each its owner and a filter
10. reads: a page of 1,000 of a partner's messages, recovering 10,000, a message by its id
11. the path of 0 on a Redis Cluster of three primaries: CPU per delivery per primary and in
    all, and what the cluster serves before its busiest primary is full
12. pacing: a partner over its capacity (429, 503, timeouts above 50 requests/s) fed 500
    events/s, paced and unpaced, with a healthy partner beside it

A scenario that times out or fails prints TIMEOUT or FAILED for its figures, and the run goes
on. Exit status 1 when a figure FAILED (a process died, the harness broke), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import (
    catalog,
    cluster,
    idle,
    isolation,
    latency,
    memory,
    pacing,
    reads,
    realistic,
    routing,
    scaling,
    throughput,
)
from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    Figure,
    Results,
)
from benchmarks.machine import code_version, machine_line
from benchmarks.sizes import QUICK, Sizes, WaitTimeout

#: In the order they run: 2 uses 0b's throughput when 0 ran.
SCENARIOS: list[ModuleType] = [
    realistic,
    throughput,
    latency,
    routing,
    idle,
    scaling,
    isolation,
    memory,
    catalog,
    reads,
    cluster,
    pacing,
]
COLUMNS = ("figure", "value", "unit", "goal", "met", "detail")


def figures_list(text: str) -> set[int]:
    try:
        chosen = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give figure numbers like 1,4") from None
    if not chosen or not chosen <= set(range(0, 13)):
        raise argparse.ArgumentTypeError(f"{text!r}: figures are numbered 0 to 12")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized: a few thousand deliveries, short phases, one round "
        "(about a minute and a half)",
    )
    parser.add_argument(
        "--only",
        type=figures_list,
        metavar="N,N",
        help="only the scenarios of these figures, e.g. 1,4 (3 is measured "
        "by scenario 1, so 1 and 3 run together)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as markdown (the README's)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="side-by-side rounds of scenarios 1, 4, 6 and 7 (default 3, quick 1)",
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="events of scenarios 1 and 6 (default 20,000, quick 3,000)",
    )
    parser.add_argument(
        "--partners", type=int, metavar="N", help="partners of scenarios 1, 2 and 6 (default 50)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="longest any one wait may take before its figures are TIMEOUT (default 60, quick 30)",
    )
    parser.add_argument(
        "--aof",
        choices=("no", "everysec", "always"),
        default="no",
        help="Redis persistence: none (default, as notifier's own cost is "
        "measured) or AOF with this appendfsync",
    )
    return parser.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    given = {
        name: getattr(args, name)
        for name in ("rounds", "events", "partners", "timeout")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(sizes, **given)


async def run_scenario(
    bench: Bench, module: ModuleType, results: Results, failures: list[str]
) -> None:
    """Run one scenario; if it stops, its figures not measured yet say why, and the run goes
    on with the next."""
    name = module.__name__.rsplit(".", 1)[1]
    try:
        await module.run(bench, results)
        return
    except WaitTimeout as exc:
        status, reason = "TIMEOUT", str(exc)
    except Exception as exc:
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    progress(f"{name}: {status}: {reason}")
    failures.append(f"{name}: {status}: {reason}")
    results.unmeasured(module.FIGURES, status, reason.splitlines()[0][:160])


def text_table(results: Results) -> list[str]:
    figures = results.in_order()
    rows = [(f.label, f.shown, f.unit, str(f.goal or ""), _met(f), f.detail) for f in figures]
    width = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(COLUMNS[:-1])]

    def line(cells: tuple[str, ...]) -> str:
        left, value, *rest = cells
        out = [
            left.ljust(width[0]),
            value.rjust(width[1]),
            *(c.ljust(w) for c, w in zip(rest[:-1], width[2:], strict=True)),
            rest[-1],
        ]
        return "  ".join(out).rstrip()

    lines = [line(COLUMNS)]
    section = -1
    for figure, row in zip(figures, rows, strict=True):
        if figure.section != section:
            section = figure.section
            lines += ["", f"{section} {results.headings.get(section, '')}".rstrip()]
        lines.append(line(row))
    return lines


def markdown_table(results: Results) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    section = -1
    for f in results.in_order():
        if f.section != section:
            section = f.section
            heading = f"**{section}** {results.headings.get(section, '')}".rstrip()
            lines.append(f"| {heading} |" + " |" * (len(COLUMNS) - 1))
        cells = (f.label.strip(), f.shown, f.unit, str(f.goal or ""), _met(f), f.detail)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return lines


def _met(figure: Figure) -> str:
    return {True: "yes", False: "NO", None: ""}[figure.met]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_of(args)
    chosen = [m for m in SCENARIOS if args.only is None or set(m.SECTIONS) & args.only]
    results = Results()
    for module in chosen:
        results.declare(module.FIGURES)
    failures: list[str] = []
    bench = Bench(sizes, args.aof)
    code = code_version()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    started = time.monotonic()
    status = 0

    async def go() -> None:
        try:
            await bench.start()
            for module in chosen:
                await run_scenario(bench, module, results, failures)
        finally:
            await bench.close()

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like ^C
    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        failures.append("interrupted")
        status = 130
    except Exception as exc:  # the bench could not start: every figure says so
        traceback.print_exc()
        failures.append(f"start: {type(exc).__name__}: {exc}")
        for module in chosen:
            results.unmeasured(module.FIGURES, "FAILED", str(exc).splitlines()[0][:160])
    seconds = time.monotonic() - started
    if any(f.status == "FAILED" for f in results.figures):
        status = status or 1
    header = header_lines(args, date, seconds, code)
    if args.markdown:
        print("\n".join([*(h + "  " for h in header), "", *markdown_table(results)]))
    else:
        print("\n".join([*header, "", *text_table(results)]))
    for failure in failures:
        print(f"\n{failure}")
    if args.json:
        args.json.write_text(
            json.dumps(as_json(results, sizes, args, date, seconds, code, failures), indent=2)
            + "\n"
        )
    if failures:
        print(f"\nlogs of every process kept in {bench.tmp}", file=sys.stderr)
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    return status


def header_lines(args: argparse.Namespace, date: str, seconds: float, code: str) -> list[str]:
    """What the run was: when, how long, on what machine, of which code, with what Redis."""
    return [
        f"notifier benchmarks, {date}, took {seconds // 60:.0f} min {seconds % 60:.0f} s"
        f"{' (--quick)' if args.quick else ''}",
        f"machine: {machine_line()}",
        f"code: {code}"
        + (
            ""
            if code_version() == code
            else f" (WARNING: changed during the run, now {code_version()})"
        ),
        f"redis: the bench's own redis-server, appendonly "
        f"{'no' if args.aof == 'no' else 'yes, appendfsync ' + args.aof}; CPU figures "
        "are /proc's unless said; 'others' is the rest of the machine meanwhile",
    ]


def as_json(
    results: Results,
    sizes: Sizes,
    args: argparse.Namespace,
    date: str,
    seconds: float,
    code: str,
    failures: list[str],
) -> dict[str, Any]:
    return {
        "date": date,
        "seconds": round(seconds, 1),
        "machine": machine_line(),
        "code": code,
        "quick": args.quick,
        "redis_aof": args.aof,
        "sizes": dataclasses.asdict(sizes),
        "headings": results.headings,
        "failures": failures,
        "figures": [
            {
                "key": f.key,
                "section": f.section,
                "label": f.label.strip(),
                "value": f.value,
                "unit": f.unit,
                "goal": str(f.goal) if f.goal else None,
                "met": f.met,
                "status": f.status,
                "detail": f.detail,
            }
            for f in results.in_order()
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
