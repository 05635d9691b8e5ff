"""`notifier top`: watch the deployment without Grafana, one row per partner with work or trouble.

It reads what every process publishes (`notifier:processes`: each process's per-partner counters,
every 2 s) and the deployment's state in Redis (`telemetry.backlog`: backlogs, ages, breakers,
disabled partners), so it shows a split deployment whole, from any machine that reaches Redis.
Rates are the change of the processes' counters between two refreshes; a process that
restarted (its counters went down) counts from zero again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from notifier import config
from notifier.models import decode_partner
from notifier.redis import keys
from notifier.redis.connection import connect
from notifier.redis.keys import Keyspace
from notifier.telemetry.backlog import PartnerBacklog, Snapshot, read_snapshot
from notifier.telemetry.reports import (
    LATENCY_BUCKETS,
    REPORT_EVERY,
    REPORT_STALE,
    PartnerTotals,
    ProcessReport,
)

#: A partner's state in the table, worst first.
State = Literal["breaker open", "disabled", "retrying", "paced", "limited", "ok"]
#: How bad a state is, for ordering rows worst first.
SEVERITY: dict[State, int] = {
    "breaker open": 5,
    "disabled": 4,
    "retrying": 3,
    "paced": 2,
    "limited": 1,
    "ok": 0,
}
_decode_report = msgspec.json.Decoder(ProcessReport).decode


class Row(msgspec.Struct, frozen=True):
    partner: str
    name: str
    rate: float  # attempts/s
    error_rate: float  # share of those that failed
    p95_ms: float | None
    backlog: int
    oldest_s: float
    in_flight: int
    state: State
    owner: str = ""


class Totals(msgspec.Struct, frozen=True):
    partners: int
    processes: int
    rate: float
    ingress_lag_s: float
    ingress_length: int


def _delta(now: PartnerTotals, before: PartnerTotals | None) -> PartnerTotals:
    if before is None or now.attempts < before.attempts:  # new, or its process restarted
        before = PartnerTotals()
    return PartnerTotals(
        attempts=now.attempts - before.attempts,
        failures=now.failures - before.failures,
        rate_limited=max(0, now.rate_limited - before.rate_limited),
        in_flight=now.in_flight,
        latency=[a - b for a, b in zip(now.latency, before.latency, strict=True)],
    )


def _p95(latency: list[int]) -> float | None:
    total = sum(latency)
    if not total:
        return None
    seen = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), latency, strict=True):
        seen += count
        if seen >= 0.95 * total:
            return float(bound)
    return None


class Readings:
    """The last two distinct reports of each process: rates are the change between them,
    over the time between them (processes report every 2 s, whatever top's refresh)."""

    def __init__(self) -> None:
        self.pairs: dict[str, tuple[ProcessReport | None, ProcessReport]] = {}

    def add(self, reports: Mapping[str, ProcessReport]) -> None:
        pairs = {}
        for name, report in reports.items():
            earlier, latest = self.pairs.get(name, (None, report))
            if report.at != latest.at:
                earlier, latest = latest, report
            pairs[name] = (earlier, latest)
        self.pairs = pairs


def rows(
    snapshot: Snapshot,
    pairs: Mapping[str, tuple[ProcessReport | None, ProcessReport]],
    names: Mapping[str, str] = {},
    owners: Mapping[str, str] = {},
) -> tuple[Totals, list[Row]]:
    """The table: every partner with work or trouble, or with attempts lately, worst first."""
    moved, rates = _changes(pairs)
    backlogs = {p.id: p for p in snapshot.partners}
    table = []
    for pid in sorted(set(backlogs) | {p for p, t in moved.items() if t.attempts or t.in_flight}):
        backlog = backlogs.get(pid) or PartnerBacklog(
            id=pid,
            name=names.get(pid, pid),
            new=0,
            in_flight=0,
            retrying=0,
            oldest_age_s=0.0,
            breaker_open=False,
            disabled=False,
        )
        change = moved.get(pid, PartnerTotals())
        table.append(
            Row(
                partner=pid,
                name=backlog.name,
                rate=rates.get(pid, 0.0),
                error_rate=change.failures / change.attempts if change.attempts else 0.0,
                p95_ms=_p95(change.latency),
                backlog=backlog.new + backlog.in_flight + backlog.retrying,
                oldest_s=backlog.oldest_age_s,
                in_flight=max(change.in_flight, backlog.in_flight),
                state=_state(backlog, change),
                owner=backlog.owner or owners.get(pid, ""),
            )
        )
    table.sort(key=lambda r: (-SEVERITY[r.state], -r.error_rate, -r.backlog, r.name))
    totals = Totals(
        partners=snapshot.partners_registered,
        processes=len(pairs),
        rate=sum(rates.values()),
        ingress_lag_s=snapshot.ingress_lag_s,
        ingress_length=snapshot.ingress_length,
    )
    return totals, table


def _changes(
    pairs: Mapping[str, tuple[ProcessReport | None, ProcessReport]],
) -> tuple[dict[str, PartnerTotals], dict[str, float]]:
    """Per partner, what every process counted between its last two reports, and the
    attempts a second that makes."""
    rates: dict[str, float] = {}
    moved: dict[str, PartnerTotals] = {}
    for earlier, latest in pairs.values():
        seconds = latest.at - earlier.at if earlier else 0.0
        for pid, counted in latest.partners.items():
            change = _delta(counted, earlier.partners.get(pid) if earlier else counted)
            into = moved.setdefault(pid, PartnerTotals())
            into.attempts += change.attempts
            into.failures += change.failures
            into.rate_limited += change.rate_limited
            into.in_flight += change.in_flight
            into.latency = [a + b for a, b in zip(into.latency, change.latency, strict=True)]
            if seconds > 0:
                rates[pid] = rates.get(pid, 0.0) + change.attempts / seconds
    return moved, rates


def _state(backlog: PartnerBacklog, change: PartnerTotals) -> State:
    if backlog.breaker_open:
        return "breaker open"
    if backlog.disabled:
        return "disabled"
    if backlog.pacing is not None:
        # before retrying: the throttles a pace absorbs wait in `due` for a moment
        return "paced"
    if backlog.retrying:
        return "retrying"
    if change.rate_limited:
        return "limited"
    return "ok"


def by_owner(table: list[Row]) -> list[Row]:
    """One row per owner (a customer's endpoints together), worst first: rates, backlogs and
    requests in flight added up, the error rate over all their attempts, the slowest p95, the
    oldest message, the worst state. As many rows as owners with work or trouble at most."""
    groups: dict[str, list[Row]] = {}
    for row in table:
        groups.setdefault(row.owner, []).append(row)
    grouped = []
    for owner, members in groups.items():
        rate = sum(r.rate for r in members)
        failing = sum(r.rate * r.error_rate for r in members)
        p95s = [r.p95_ms for r in members if r.p95_ms is not None]
        grouped.append(
            Row(
                partner=owner,
                name=f"{owner or '(no owner)'} ({len(members)})",
                rate=rate,
                error_rate=failing / rate if rate else max(r.error_rate for r in members),
                p95_ms=max(p95s) if p95s else None,
                backlog=sum(r.backlog for r in members),
                oldest_s=max(r.oldest_s for r in members),
                in_flight=sum(r.in_flight for r in members),
                state=max((r.state for r in members), key=SEVERITY.__getitem__),
                owner=owner,
            )
        )
    grouped.sort(key=lambda r: (-SEVERITY[r.state], -r.error_rate, -r.backlog, r.name))
    return grouped


async def read_names(
    redis: Redis, keyspace: Keyspace, ids: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The names and owners of partners that had attempts but have no backlog (the snapshot
    has those)."""
    client: Any = redis
    async with client.pipeline(transaction=False) as pipe:
        for pid in ids:
            pipe.hget(keyspace.shard_of(pid).partners, pid)
        records = await pipe.execute()
    names, owners = {}, {}
    for pid, record in zip(ids, records, strict=True):
        if record is not None:
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                partner = decode_partner(record)
                names[pid] = partner.name
                owners[pid] = partner.owner or ""
    return names, owners


async def read_reports(redis: Redis) -> dict[str, ProcessReport]:
    client: Any = redis
    found = {}
    for name, raw in (await client.hgetall(keys.PROCESSES)).items():
        try:
            report = _decode_report(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if time.time() - report.at <= REPORT_STALE:
            found[name.decode(errors="replace")] = report
    return found


async def read_table(
    redis: Redis, settings: config.Settings, readings: Readings
) -> tuple[Totals, list[Row]]:
    """The table as it stands now, `readings` taking the processes' latest reports."""
    snapshot = await read_snapshot(redis, settings.keyspace(), settings.ingress_stream)
    readings.add(await read_reports(redis))
    known = {p.id for p in snapshot.partners}
    active = {pid for _, latest in readings.pairs.values() for pid in latest.partners}
    names, owners = await read_names(redis, settings.keyspace(), sorted(active - known))
    return rows(snapshot, readings.pairs, names, owners)


def render(totals: Totals, table: list[Row], by_owner: bool = False) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text(
        f"notifier top  ingress lag {totals.ingress_lag_s:.1f}s "
        f"({totals.ingress_length} waiting)  {totals.rate:.1f} deliveries/s  "
        f"{totals.partners} partners  {totals.processes} processes reporting"
    )
    grid = Table(expand=True)
    for column, justify in (
        ("owner (partners)" if by_owner else "partner", "left"),
        ("deliveries/s", "right"),
        ("errors", "right"),
        ("p95 ms", "right"),
        ("backlog", "right"),
        ("oldest", "right"),
        ("in flight", "right"),
        ("state", "left"),
    ):
        grid.add_column(column, justify=justify)  # type: ignore[arg-type]
    styles = {
        "breaker open": "bold red",
        "disabled": "red",
        "retrying": "yellow",
        "paced": "magenta",
        "limited": "cyan",
        "ok": "green",
    }
    for row in table:
        grid.add_row(
            row.name,
            f"{row.rate:.1f}",
            f"{row.error_rate:.0%}",
            "-" if row.p95_ms is None else f"{row.p95_ms:g}",
            str(row.backlog),
            f"{row.oldest_s:.0f}s",
            str(row.in_flight),
            Text(row.state, style=styles[row.state]),
        )
    if not table:
        grid.add_row("(no partner has work or trouble)", "", "", "", "", "", "", "")
    return Group(header, grid)


async def watch(settings: config.Settings, args: argparse.Namespace) -> None:
    from rich.live import Live

    redis = connect(settings, "notifier-top", retries=0)
    readings = Readings()
    try:
        if args.once:  # rates need two reports of each process, 2 s apart
            readings.add(await read_reports(redis))
            await asyncio.sleep(REPORT_EVERY + 0.5)
        with Live(auto_refresh=False, screen=not args.once) as live:
            while True:
                totals, table = await read_table(redis, settings, readings)
                if args.by_owner:
                    table = by_owner(table)
                live.update(render(totals, table, args.by_owner), refresh=True)
                if args.once:
                    return
                await asyncio.sleep(args.interval)  # the refresh period itself
    finally:
        await redis.aclose()


def add_commands(sub: Any) -> None:
    top = sub.add_parser(
        "top",
        help="watch every partner with work or trouble, live",
        description="A live table, one row per partner with work or trouble, worst first: "
        "deliveries/s, error rate, p95 latency, backlog, oldest message, in flight, state "
        "(breaker open, disabled, retrying, paced, limited, ok). "
        "It reads what every process publishes, so it shows a split deployment whole. "
        "Ctrl-C quits.",
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.add_argument(
        "--by-owner",
        action="store_true",
        help="one row per owner (its partners together) instead of one per partner",
    )
    top.set_defaults(handler=watch)
