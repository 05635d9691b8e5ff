"""The per-minute history the console charts: what a live notifier sent a partner, and how much
of it failed, counted once for the deployment by the metrics leader."""

from __future__ import annotations

import itertools

from aiohttp import web
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.telemetry import history
from notifier.telemetry.reports import PartnerTotals, ProcessReport
from tests.helpers import EndpointFactory, eventually, publish, register, running


async def test_the_leader_counts_attempts_and_failures_per_minute(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    async def first_three_fail(request: web.Request, n: int) -> web.Response:
        return web.Response(status=500 if n <= 3 else 200)

    endpoint = await endpoint_factory(first_three_fail)
    pid, _ = await register(redis, settings, "charted", endpoint.url, ["order.created"])
    other, _ = await register(redis, settings, "idle", endpoint.url, ["order.paid"])
    async with running(settings):
        for n in range(3):
            await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(6)

        async def counted() -> bool:
            minutes = await history.read(redis, pid)
            return (sum(m.attempts for m in minutes), sum(m.failures for m in minutes)) == (6, 3)

        await eventually(counted, 30, "6 attempts and 3 failures in the partner's history")
    minutes = await history.read(redis, pid)
    assert len(minutes) == history.MINUTES
    assert [m.at for m in minutes] == sorted(m.at for m in minutes)
    assert all(b.at - a.at == 60 for a, b in itertools.pairwise(minutes))
    assert sum(m.attempts for m in await history.read(redis, other)) == 0
    for name in await redis.keys("notifier:history:*"):
        assert 0 < await redis.ttl(name) <= history.KEPT_S


def report(at: float, **partners: tuple[int, int]) -> ProcessReport:
    return ProcessReport(
        name="p",
        role="deliver",
        at=at,
        partners={pid: PartnerTotals(attempts=a, failures=f) for pid, (a, f) in partners.items()},
    )


def test_changes_count_each_process_once_and_restarts_from_zero() -> None:
    first = {"a": report(1, x=(10, 2)), "b": report(1, x=(5, 0))}
    # a new process is only remembered; a restarted one (totals went down) counts from zero
    later = {
        "a": report(3, x=(14, 3), y=(1, 1)),
        "b": report(3, x=(2, 1)),
        "c": report(3, x=(9, 9)),
    }
    assert history.changes({}, first) == {}
    assert history.changes(first, later) == {"x": (4 + 2, 1 + 1), "y": (1, 1)}
    assert history.changes(later, later) == {}
