"""A served partner's loop: it always yields time, ends after its quantum without waiting for
its open requests, and a rate-limited partner never stalls its delivery process or its
neighbours."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from notifier.engine.delivery import DeliveryPool
from notifier.engine.served import QUANTUM
from tests.helpers import (
    Endpoint,
    EndpointFactory,
    Spawn,
    eventually,
    idle,
    publish,
    register,
    running,
    stop_running,
)
from tests.integration.test_ratelimit import busiest_window


@pytest.mark.slow
async def test_many_limited_partners_with_backlogs_beside_an_unlimited_one(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """Ten partners at 30/second with 150 messages each (five seconds, several quanta) and an
    unlimited partner with 1,000: every message arrives, each limited partner at its limit,
    and the unlimited one is not held back by them."""
    limited: list[Endpoint] = [await endpoint_factory() for _ in range(10)]
    free: Endpoint = await endpoint_factory()
    for i, endpoint in enumerate(limited):
        await register(
            redis,
            settings,
            f"limited-{i}",
            endpoint.url,
            [f"evt.l{i}"],
            rate_limit="30/second",
            max_in_flight=30,
        )
    await register(redis, settings, "free", free.url, ["evt.free"])
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(150):
            for i in range(10):
                pipe.xadd("notifier:events", {"type": f"evt.l{i}", "data": f'{{"n": {n}}}'})
        for n in range(1000):
            pipe.xadd("notifier:events", {"type": "evt.free", "data": f'{{"n": {n}}}'})
        await pipe.execute()
    started = time.monotonic()
    async with running(settings):
        await free.wait_for(1000, timeout=30)
        free_done = time.monotonic() - started
        for endpoint in limited:
            await endpoint.wait_for(150, timeout=30)
        limited_done = time.monotonic() - started
        await idle(redis)
    for endpoint in limited:
        assert sorted(body["data"]["n"] for body in endpoint.bodies()) == list(range(150))
        # The endpoints share this process's event loop with notifier and 1,000 unlimited
        # deliveries, so an arrival is stamped up to one slice (3 requests, a tenth of the
        # window) late; test_ratelimit holds the limit to the request by the clock of an
        # endpoint in a process of its own.
        assert busiest_window(endpoint.received) <= 30 + 3
    assert limited_done >= 4.0  # 150 at 30/second: the limit held
    assert free_done < limited_done / 2, (free_done, limited_done)


async def test_a_saturated_lone_process_still_takes_a_partner_left_waiting(
    redis: Redis,
    env: dict[str, str],
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above CPU_BUSY a process leaves new partners to the others; with no other process a
    partner that has waited STARVED_MS is served all the same. Here the process counts as
    saturated throughout, and the first partner's request is held open until the second
    partner has received its message: without the exception it never would."""
    # the held request must outlast the wait below, so that only the exception can help
    settings = config.load({**env, "NOTIFIER_REQUEST_TIMEOUT": "40s", "NOTIFIER_CLAIM_IDLE": "60s"})
    monkeypatch.setattr(DeliveryPool, "_cpu_busy", lambda self: 1.0)
    release = asyncio.Event()

    async def hold(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response()

    slow = await endpoint_factory(hold)
    waiting = await endpoint_factory()
    await register(redis, settings, "slow", slow.url, ["evt.slow"])
    await register(redis, settings, "waiting", waiting.url, ["evt.waiting"])
    async with running(settings):
        await publish(redis, "evt.slow", {"n": 1})
        await eventually(lambda: len(slow.received) == 1, 20, "the slow partner's request")
        await publish(redis, "evt.waiting", {"n": 2})
        try:
            await waiting.wait_for(1)
        finally:
            release.set()
        await idle(redis)
    assert len(slow.received) == 1 and len(waiting.received) == 1


@pytest.mark.slow
async def test_a_request_held_open_does_not_idle_its_partner(
    redis: Redis,
    env: dict[str, str],
    settings: Settings,
    endpoint_factory: EndpointFactory,
    spawn: Spawn,
) -> None:
    """A partner's first request hangs until the test lets it go; every other is answered at
    once. Two delivery processes serve the partner in turn for three quanta, each event
    published once the one before it arrived: all arrive while the first is still open (a
    serve gives its partner back without waiting for it), and the requests open at the
    endpoint never exceed max_in_flight, across serves and processes."""
    env["NOTIFIER_REQUEST_TIMEOUT"] = "30s"
    release = asyncio.Event()
    opened = {"now": 0, "most": 0}

    async def first_hangs(request: web.Request, n: int) -> web.StreamResponse:
        opened["now"] += 1
        opened["most"] = max(opened["most"], opened["now"])
        try:
            if n == 1:
                await release.wait()
            return web.Response()
        finally:
            opened["now"] -= 1

    endpoint = await endpoint_factory(first_hangs)
    await register(redis, settings, "slow-first", endpoint.url, ["*"], max_in_flight=2)
    async with running(settings, deliver=False):
        procs = [spawn("deliver", extra={"NOTIFIER_CONSUMER": f"deliver-{n}"}) for n in (1, 2)]
        await publish(redis, "order.created", {"n": 0})
        await endpoint.wait_for(1, 30)
        hung_at = time.monotonic()
        sent = 1
        while time.monotonic() - hung_at < 3 * QUANTUM:
            await publish(redis, "order.created", {"n": sent})
            sent += 1
            await endpoint.wait_for(sent, 10)
        assert not release.is_set() and opened["now"] == 1  # the first is still open
        release.set()
        await eventually(lambda: opened["now"] == 0, 10, "the first request to end")
        await idle(redis)
        stop_running(procs)
    assert sorted(json.loads(r.body)["data"]["n"] for r in endpoint.received) == list(range(sent))
    assert opened["most"] == 2
