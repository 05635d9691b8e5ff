"""The breaker: a partner whose every attempt fails gets probe batches, not a stream of requests.

Counts are taken on the endpoint's own clock (when each request arrived), with bounds generous
enough for a slow machine but far from what a missing or leaky breaker produces: a backlog of
BACKLOG messages retried every PAUSE would put hundreds of requests in each window.
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.engine.breaker import BREAKER_AFTER, BREAKER_PAUSE
from tests.helpers import EndpointFactory, eventually, idle, publish, register, running

MAX_IN_FLIGHT = 4
BACKLOG = 300
#: A short first retry delay makes the breaker's pause (min(first delay, BREAKER_PAUSE)) short;
#: many entries keep every message from running out of retries during the test.
RETRY_SCHEDULE = ",".join(["1s"] * 30)
PAUSE = min(1.0, BREAKER_PAUSE)
#: How long the tripped breaker is watched.
OBSERVE = 4.0


def bursts(arrivals: list[float], gap: float) -> list[list[float]]:
    """Arrival times grouped into bursts: a burst ends where `gap` passes without a request."""
    grouped: list[list[float]] = []
    for at in arrivals:
        if grouped and at - grouped[-1][-1] < gap:
            grouped[-1].append(at)
        else:
            grouped.append([at])
    return grouped


async def test_breaker_sends_only_probes_until_the_first_success(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = config.load({**env, "NOTIFIER_RETRY_SCHEDULE": RETRY_SCHEDULE})
    assert min(settings.retry_schedule[0], BREAKER_PAUSE) == PAUSE
    up = {"on": False}
    delivered: set[str] = set()

    async def down_then_up(request: web.Request, n: int) -> web.Response:
        if not up["on"]:
            return web.Response(status=500, text="down")
        delivered.add(request.headers["webhook-id"])
        return web.Response(status=200)

    failing = await endpoint_factory(down_then_up)
    healthy = await endpoint_factory()
    await register(redis, settings, "failing", failing.url, ["*"], max_in_flight=MAX_IN_FLIGHT)
    await register(redis, settings, "healthy", healthy.url, ["*"], max_in_flight=MAX_IN_FLIGHT)
    # The backlog is in place before delivery starts, so the partner always has work to send.
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(BACKLOG):
            pipe.xadd(
                "notifier:events", {"type": "order.created", "data": msgspec.json.encode({"n": n})}
            )
        await pipe.execute()

    async with running(settings):
        await failing.wait_for(1)
        first = failing.received[0].at
        # The breaker trips at the first failed batch judged BREAKER_AFTER after the first
        # failure; half a pause later only probes may arrive.
        watch_from = first + BREAKER_AFTER + PAUSE / 2
        watch_until = watch_from + OBSERVE
        await eventually(
            lambda: failing.received[-1].at >= watch_from,
            10 + 2 * PAUSE,
            "the first probe after the breaker tripped",
        )

        # A healthy partner beside it gets a fresh wave at once, not after the broken one's
        # pause: the breaker holds back one partner, not the pool. The wave follows a probe
        # just failed, so a pause shared by the pool would hold it back most of a pause.
        await healthy.wait_for(BACKLOG)
        published_at = time.monotonic()
        for n in range(20):
            await publish(redis, "order.paid", {"n": n})
        await healthy.wait_for(BACKLOG + 20, timeout=10)
        wave_took = healthy.received[-1].at - published_at
        assert wave_took < PAUSE / 2, f"the healthy partner's wave took {wave_took:.3f}s"

        # Waiting for a request after the window (a probe) is what says the window is over.
        await eventually(
            lambda: failing.received[-1].at > watch_until,
            OBSERVE + 10 * PAUSE,
            "a probe after the watched window",
        )
        watched = [r.at for r in failing.received if watch_from <= r.at <= watch_until]
        probes = bursts(watched, PAUSE / 2)
        report = (
            f"{len(watched)} requests in {OBSERVE:g}s after the trip, bursts of "
            f"{[len(b) for b in probes]} at {[round(b[0] - first, 3) for b in probes]}s"
        )
        # At most one probe batch per pause: no stretch of (nearly) a pause holds more.
        busiest = max(
            (sum(1 for t in watched if at <= t < at + 0.9 * PAUSE) for at in watched), default=0
        )
        assert busiest <= MAX_IN_FLIGHT, report
        assert len(watched) <= MAX_IN_FLIGHT * (OBSERVE / PAUSE + 1), report
        # ...and it does keep probing: a breaker that stopped for good would pass the above.
        assert len(probes) >= OBSERVE / PAUSE - 1, report

        # The first success closes it: the whole backlog flows at once, where probes alone
        # would take BACKLOG / MAX_IN_FLIGHT pauses.
        up["on"] = True
        opened_at = time.monotonic()
        await eventually(
            lambda: len(delivered) == BACKLOG + 20,
            PAUSE + 10,
            "the backlog to flow after the first success",
        )
        flowed = failing.received[-1].at - opened_at
        assert flowed < PAUSE + 3, f"the backlog took {flowed:.3f}s after the endpoint came up"
        await idle(redis)
    assert await redis.xlen("notifier:dead") == 0
