"""The overview: every partner with its state and numbers, worst first, and one partner's row.

Rates, p95, backlogs and states are `notifier top`'s (`cli/top.py`): the same reading of the
processes' reports and of the backlog snapshot, the same states (ok, limited, retrying,
breaker open, disabled, and whatever state top learns to tell, such as `paced` for adaptive
pacing) in the same order. top lists the partners with work or trouble, and its rates are of
the last two reports (2 s apart): a partner whose messages all failed and were dead-lettered
has neither. So the console adds what an operator looks for there: the error rate over the
last RECENT_MINUTES from the per-minute history, the breaker of every partner that had
attempts in them (a few commands for the partners with attempts, none for idle ones), and
every other registered partner, idle, so that a search finds any.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from notifier import logs
from notifier.cli.top import SEVERITY, Readings, Row, Totals, read_reports, read_table
from notifier.config import Settings
from notifier.models import Partner
from notifier.redis.connection import REDIS_ERRORS, pause
from notifier.store import Store
from notifier.telemetry import history
from notifier.telemetry.history import Minute
from notifier.telemetry.reports import REPORT_EVERY

log = logs.get("console")

#: Most rows one overview shows; a search narrows the rest.
MAX_ROWS = 500
#: Readings older than this are dropped: a rate over the minutes nobody looked is no rate.
STALE_S = 10.0
#: The error rate shown is over this many minutes.
RECENT_MINUTES = 5


class Recent(msgspec.Struct, frozen=True):
    """What the last minutes add to top's table."""

    counts: dict[str, Minute]  # attempts and failures by partner
    broken: frozenset[str]  # partners whose breaker is open


def idle_row(partner: Partner) -> Row:
    """A registered partner top does not list: nothing waiting, no attempts lately."""
    return Row(
        partner=partner.id,
        name=partner.name,
        rate=0.0,
        error_rate=0.0,
        p95_ms=None,
        backlog=0,
        oldest_s=0.0,
        in_flight=0,
        state="ok" if partner.enabled else "disabled",
        owner=partner.owner or "",
    )


def severity(row: Row) -> tuple[int, float, int, str]:
    """Worst first: by state, then error rate, then backlog; a state top adds later and this
    table does not know sorts with ok."""
    return (-SEVERITY.get(row.state, 0), -row.error_rate, -row.backlog, row.name)


def shown_row(partner: Partner, row: Row | None, recent: Recent) -> Row:
    """The partner's row as the console shows it: the record's name and owner, the recent
    error rate, and an open breaker even when top does not list the partner."""
    row = row or idle_row(partner)
    counted = recent.counts.get(partner.id)
    state = row.state
    if partner.id in recent.broken and SEVERITY.get(state, 0) < SEVERITY["breaker open"]:
        state = "breaker open"
    return msgspec.structs.replace(
        row,
        name=partner.name,
        owner=partner.owner or "",
        state=state,
        error_rate=counted.failures / counted.attempts if counted and counted.attempts else 0.0,
    )


def merged(partners: list[Partner], table: list[Row], recent: Recent) -> list[Row]:
    """Every registered partner, worst first."""
    listed = {row.partner: row for row in table}
    shown = [shown_row(p, listed.get(p.id), recent) for p in partners]
    return sorted(shown, key=severity)


def matching(
    rows: list[Row], partners: dict[str, Partner], query: str, owner: str | None
) -> list[Row]:
    """The rows whose partner's name, id, owner or URL holds `query` (any case), of `owner`
    only when given."""
    needle = query.strip().casefold()
    found = []
    for row in rows:
        partner = partners.get(row.partner)
        if owner is not None and row.owner != owner:
            continue
        if needle:
            text = (row.name, row.partner, row.owner, partner.url if partner else "")
            if not any(needle in part.casefold() for part in text):
                continue
        found.append(row)
    return found


class Board:
    """What the overview and the partner pages read; one per api process, since rates need
    the previous look's reports."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keyspace = settings.keyspace()
        self.store = Store(redis, settings)
        self.readings = Readings()
        self.looked = 0.0

    async def watch(self, stop: asyncio.Event) -> None:
        """Take the processes' reports as they come, until `stop`: rates are the change
        between two reports, so without this the first look at the console (and any look
        after STALE_S without one) had none to show until its next refresh."""
        while not stop.is_set():
            try:
                self.readings.add(await read_reports(self.redis))
                self.looked = time.monotonic()
            except REDIS_ERRORS as exc:
                log.debug("could not read the processes' reports", error=str(exc))
            except Exception:
                log.exception("reading the processes' reports failed")
            await pause(stop, REPORT_EVERY)

    async def table(self) -> tuple[Totals, list[Row], bool]:
        """top's totals and rows, and whether its rates are measured yet."""
        if time.monotonic() - self.looked > STALE_S:
            self.readings = Readings()
        self.looked = time.monotonic()
        totals, table = await read_table(self.redis, self.settings, self.readings)
        measured = any(earlier is not None for earlier, _ in self.readings.pairs.values())
        return totals, table, measured

    async def recent(self) -> Recent:
        counts = await history.recent(self.redis, RECENT_MINUTES)
        ids = sorted(pid for pid, counted in counts.items() if counted.failures)
        client: Any = self.redis
        async with client.pipeline(transaction=False) as pipe:
            for pid in ids:
                pipe.exists(self.keyspace.partner(pid).breaker)
            found = await pipe.execute()
        broken = frozenset(pid for pid, open_ in zip(ids, found, strict=True) if open_)
        return Recent(counts=counts, broken=broken)

    async def rows(self) -> tuple[Totals, list[Row], bool, list[Partner]]:
        """Every partner's row, worst first, with top's totals, whether rates are measured
        yet, and the partners."""
        totals, table, measured = await self.table()
        partners = await self.store.partners()
        return totals, merged(partners, table, await self.recent()), measured, partners

    async def row(self, partner: Partner) -> tuple[Row, bool]:
        """One partner's row, and whether its rates are measured yet."""
        _, table, measured = await self.table()
        found = next((r for r in table if r.partner == partner.id), None)
        return shown_row(partner, found, await self.recent()), measured


BOARD: web.AppKey[Board] = web.AppKey("board", Board)
