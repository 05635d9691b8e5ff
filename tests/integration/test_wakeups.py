"""An idle delivery process blocks on Redis and is woken by new work, not by polling.

The fallback check is set to 30 s here, so a delivery that arrives within a second or two came
through a wake-up token or the timer of a known due time; the process's own count of how its
waits ended says which.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.engine import delivery
from notifier.engine.delivery import DeliveryPool
from notifier.engine.router import Router
from notifier.engine.sender import Sender
from notifier.redis import lua
from tests.helpers import Endpoint, EndpointFactory, eventually, publish, register


@contextlib.asynccontextmanager
async def pool(redis: Redis, settings: Settings) -> AsyncIterator[DeliveryPool]:
    async with Sender(settings) as sender:
        deliver = DeliveryPool(redis, settings, sender)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(deliver.run(stop)),
            asyncio.create_task(Router(redis, settings).run(stop)),
        ]
        try:
            yield deliver
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def blocked(redis: Redis) -> bool:
    """A delivery process is blocked on the wake-up list right now."""
    return any(client.get("cmd") == "blpop" for client in await redis.client_list())


@pytest.fixture(autouse=True)
def long_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FALLBACK", 30.0)


async def test_a_routed_message_wakes_a_blocked_process(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["*"])
    async with pool(redis, settings) as deliver:
        leases = count_leases(deliver)
        await eventually(lambda: blocked(redis), 10, "the process to block for work")
        for n in range(3):
            await publish(redis, "order.created", {"n": n})
            await endpoint.wait_for(n + 1, timeout=2)
            await eventually(lambda: blocked(redis), 5, "the process to block again")
    assert deliver.wakeups["token"] >= 3
    assert deliver.wakeups["fallback"] == 0
    # the first look, then at most one lease per event (none when the message reached the
    # partner while it was still being served): a lease that got fewer partners than it asked
    # for is not followed by another that would find none
    assert len(leases) <= 1 + 3


def count_leases(deliver: DeliveryPool) -> list[int]:
    """A list that grows by one at each lease call `deliver` makes."""
    calls: list[int] = []
    send = deliver.scripts.send

    def counting(call: lua.Call[Any]) -> asyncio.Future[Any]:
        if call.script == "lease":
            calls.append(1)
        return send(call)  # type: ignore[no-any-return]

    deliver.scripts.send = counting  # type: ignore[method-assign]
    return calls


async def test_a_retry_coming_due_wakes_a_blocked_process(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    async def fail_first(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n == 1 else 200)

    endpoint: Endpoint = await endpoint_factory(fail_first)
    await register(redis, settings, "p", endpoint.url, ["*"])
    async with pool(redis, settings) as deliver:
        await eventually(lambda: blocked(redis), 10, "the process to block for work")
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(2, timeout=3)  # the retry is 200 ms after the failure
    assert deliver.wakeups["timer"] >= 1
    assert deliver.wakeups["fallback"] == 0


async def test_a_rate_limit_slot_opening_wakes_a_blocked_process(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    endpoint: Endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["*"], rate_limit="1/second")
    async with pool(redis, settings) as deliver:
        await eventually(lambda: blocked(redis), 10, "the process to block for work")
        for n in range(3):
            await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(3, timeout=5)  # one a second
    gaps = [b.at - a.at for a, b in zip(endpoint.received, endpoint.received[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    assert deliver.wakeups["timer"] >= 1
    assert deliver.wakeups["fallback"] == 0


async def test_an_idle_process_makes_almost_no_redis_calls(
    redis: Redis, settings: Settings
) -> None:
    """Idle, a delivery process blocks for the fallback at a time: with it at 30 s, a few
    seconds see one lease and one BLPOP, however many partners are registered."""
    for n in range(200):
        await register(redis, settings, f"p{n}", f"https://p{n}.example.com", ["*"])
    async with pool(redis, settings):
        await eventually(lambda: blocked(redis), 10, "the process to block for work")
        assert await redis.zcard("notifier:ready") == 0  # saving a partner woke nobody
        before = await redis.info("stats")
        await asyncio.sleep(3)  # measuring idleness: nothing to wait for
        after = await redis.info("stats")
    # this test's own INFO calls count too
    assert after["total_commands_processed"] - before["total_commands_processed"] <= 5
