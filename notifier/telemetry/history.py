"""Each partner's attempts and failures per minute over the last hour, for the console's chart.

Every process publishes its per-partner totals since it started (`notifier:processes`); the
metrics leader (`observer.py`) turns the change since its previous look into HINCRBY on the
current minute's hash. One writer for the deployment, so nothing is counted twice, at a cost
of two HINCRBY per partner that had attempts, every SNAPSHOT_EVERY: idle partners cost nothing
and nothing is added to delivery's own path. A leader that takes over starts from its first
look, so a hand-over loses at most one interval; a process that restarted (its totals went
down) counts from zero again.

    notifier:history:<minute>   hash   "<partner id>\\ta" -> attempts, "<partner id>\\tf" ->
                                       failures (TTL: KEPT_S)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis

from notifier.redis import keys
from notifier.telemetry.reports import ProcessReport

#: How far back the chart goes.
MINUTES = 60
#: A minute's hash outlives the chart's reach by a little, so a late reader finds it whole.
KEPT_S = (MINUTES + 5) * 60


class Minute(msgspec.Struct, frozen=True):
    """One minute of a partner's chart."""

    at: int  # epoch seconds of the minute's start
    attempts: int
    failures: int


def key(minute: int) -> str:
    """The hash of the minute starting at `minute` (epoch seconds)."""
    return f"{keys.HISTORY}{minute}"


def changes(
    before: Mapping[str, ProcessReport], now: Mapping[str, ProcessReport]
) -> dict[str, tuple[int, int]]:
    """Per partner, (attempts, failures) counted by every process between two looks. A
    process seen for the first time is only remembered: its totals span its whole life."""
    moved: dict[str, tuple[int, int]] = {}
    for name, report in now.items():
        earlier = before.get(name)
        if earlier is None:
            continue
        for pid, counted in report.partners.items():
            was = earlier.partners.get(pid)
            attempts, failures = counted.attempts, counted.failures
            if was is not None and was.attempts <= counted.attempts:
                attempts -= was.attempts
                failures = max(0, failures - was.failures)
            if attempts > 0:
                a, f = moved.get(pid, (0, 0))
                moved[pid] = (a + attempts, f + failures)
    return moved


class History:
    """The leader's side: what it saw last, and the counts it adds."""

    def __init__(self, redis: Redis) -> None:
        self.redis: Any = redis  # redis-py types replies as bytes | str; this client: bytes
        self.seen: dict[str, ProcessReport] = {}

    def forget(self) -> None:
        """No longer the leader: another process counts meanwhile, so start over."""
        self.seen = {}

    async def record(self, reports: Mapping[str, ProcessReport]) -> None:
        moved = changes(self.seen, reports)
        self.seen = dict(reports)
        if not moved:
            return
        minute = key(int(time.time()) // 60 * 60)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid, (attempts, failures) in moved.items():
                pipe.hincrby(minute, f"{pid}\ta", attempts)
                if failures:
                    pipe.hincrby(minute, f"{pid}\tf", failures)
            pipe.pexpire(minute, KEPT_S * 1000)
            await pipe.execute()


async def read(redis: Redis, partner_id: str, now: float | None = None) -> list[Minute]:
    """The partner's last MINUTES minutes, oldest first, the current (partial) one last."""
    client: Any = redis
    last = int(now if now is not None else time.time()) // 60 * 60
    minutes = [last - 60 * n for n in range(MINUTES - 1, -1, -1)]
    async with client.pipeline(transaction=False) as pipe:
        for minute in minutes:
            pipe.hmget(key(minute), [f"{partner_id}\ta", f"{partner_id}\tf"])
        replies = await pipe.execute()
    return [
        Minute(at=minute, attempts=int(a or 0), failures=int(f or 0))
        for minute, (a, f) in zip(minutes, replies, strict=True)
    ]


async def recent(redis: Redis, minutes: int, now: float | None = None) -> dict[str, Minute]:
    """Every partner's attempts and failures over the last `minutes` minutes (the current,
    partial one included), added up; `at` is the first minute's start."""
    client: Any = redis
    last = int(now if now is not None else time.time()) // 60 * 60
    first = last - 60 * (minutes - 1)
    async with client.pipeline(transaction=False) as pipe:
        for minute in range(first, last + 1, 60):
            pipe.hgetall(key(minute))
        replies = await pipe.execute()
    counts: dict[str, list[int]] = {}
    for reply in replies:
        for name, value in reply.items():
            pid, _, kind = name.decode(errors="replace").rpartition("\t")
            into = counts.setdefault(pid, [0, 0])
            into[1 if kind == "f" else 0] += int(value)
    return {pid: Minute(at=first, attempts=a, failures=f) for pid, (a, f) in counts.items()}
