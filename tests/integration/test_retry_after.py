"""A partner's Retry-After, in both its forms, against real endpoints: honoured on 503 when it
asks for longer than the schedule (an HTTP date too), capped at 24 hours, ignored when
shorter; and an ordered partner goes on with message N+1 once N is dead-lettered."""

from __future__ import annotations

import email.utils
import math
import time

from aiohttp import web
from redis.asyncio import Redis

from notifier import retry
from notifier.redis import keys
from tests.helpers import KS, EndpointFactory, entries, eventually, idle, publish, register, running
from tests.integration.test_retries import SLACK, gaps, with_schedule


async def test_an_http_date_on_503_is_honoured_over_a_shorter_schedule(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "100ms,100ms")
    asked: list[float] = []

    async def unavailable_once(request: web.Request, n: int) -> web.StreamResponse:
        if n > 1:
            return web.Response()
        # a whole second two to three seconds ahead: HTTP dates have no fractions
        when = math.ceil(time.time()) + 2
        asked.append(when - time.time())
        return web.Response(status=503, headers={"Retry-After": email.utils.formatdate(when)})

    endpoint = await endpoint_factory(unavailable_once)
    await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(2)
        await idle(redis)
    [gap] = gaps(endpoint)
    assert asked[0] - 0.05 <= gap < asked[0] + SLACK, f"{gap:.3f}s, asked {asked[0]:.3f}s"


async def test_a_retry_after_shorter_than_the_schedule_is_ignored(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "1500ms")

    async def unavailable_once(request: web.Request, n: int) -> web.StreamResponse:
        if n > 1:
            return web.Response()
        return web.Response(status=503, headers={"Retry-After": "0"})

    endpoint = await endpoint_factory(unavailable_once)
    await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(2)
        await idle(redis)
    [gap] = gaps(endpoint)
    assert 1.5 <= gap < 1.5 * (1 + retry.JITTER) + SLACK, f"second try {gap:.3f}s after"


async def test_a_retry_after_is_capped_at_24_hours_in_either_form(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "100ms")
    asked = {"days": "604800", "date": "Fri, 01 Jan 2100 00:00:00 GMT"}

    async def far_away(request: web.Request, n: int) -> web.StreamResponse:
        form = (await request.json())["data"]["form"]
        return web.Response(status=503, headers={"Retry-After": asked[form]})

    endpoint = await endpoint_factory(far_away)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    due = KS.partner(pid).due
    async with running(settings):
        for form in asked:
            await publish(redis, "order.created", {"form": form})

        async def both_waiting() -> bool:
            return await redis.zcard(due) == 2

        await eventually(both_waiting, 20, "both messages to wait for their retry")
        now_ms = time.time() * 1000
        waiting = await redis.zrange(due, 0, -1, withscores=True)
        scores = [float(pair[1]) for pair in waiting]
    assert len(endpoint.received) == 2
    for score in scores:
        assert abs(score - now_ms - retry.MAX_RETRY_AFTER * 1000) < 5_000, score - now_ms


async def test_an_ordered_partner_sends_the_next_once_the_head_is_dead_lettered(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "100ms,100ms")

    async def head_always_fails(request: web.Request, n: int) -> web.StreamResponse:
        failing = (await request.json())["data"]["n"] == 1
        return web.Response(status=500 if failing else 200)

    endpoint = await endpoint_factory(head_always_fails)
    pid, _ = await register(redis, settings, "ordered", endpoint.url, ["*"], ordered=True)
    async with running(settings):
        for n in range(1, 5):
            await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(6)
        await idle(redis)
    assert [b["data"]["n"] for b in endpoint.bodies()] == [1, 1, 1, 2, 3, 4]
    [(_, letter)] = await entries(redis, keys.DEAD)
    assert letter[b"partner"].decode() == pid
    assert b'"n":1' in letter[b"message"].replace(b" ", b"")
