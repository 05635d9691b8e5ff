"""Rate limits and isolation against real Redis, real endpoints and real delivery processes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from tests.helpers import (
    EndpointFactory,
    Received,
    Spawn,
    eventually,
    idle,
    publish,
    register,
    running,
)


def busiest_window(received: list[Received], seconds: float = 1.0) -> int:
    """The most requests the endpoint's own clock saw in any sliding window."""
    times = sorted(r.at for r in received)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.slow
async def test_limit_holds_across_three_delivery_processes(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    limited = await endpoint_factory()
    await register(
        redis, settings, "limited", limited.url, ["*"], rate_limit="20/second", max_in_flight=20
    )
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(200):
            pipe.xadd("notifier:events", {"type": "order.created", "data": f'{{"n": {i}}}'})
        await pipe.execute()
    # started and connected first, so no process is busy starting while another sends
    for n in range(3):
        spawn("deliver", extra={"NOTIFIER_CONSUMER": f"deliver-{n}"})
    await eventually(lambda: _clients(redis, "notifier-deliver", 3), 30, "3 delivery processes")
    async with running(settings, deliver=False):
        await limited.wait_for(200, timeout=30)
        await idle(redis)

    assert len(limited.received) == 200
    t0 = limited.received[0].at
    timeline = [round(r.at - t0, 3) for r in limited.received]
    assert busiest_window(limited.received) <= 20, str(timeline)
    took = limited.received[-1].at - limited.received[0].at
    # 200 at 20/s, spread over slices of a 1.025 s window: about 10.4 s, far from the 20 s of a
    # limit kept at half its rate. NOTIFIER_CLAIM_IDLE is 60 s here, so a lease or message left
    # to expire (the "unexplained 3 s stall" this bound once absorbed) fails the test.
    assert 9.0 <= took <= 11.5, f"200 messages at 20/second took {took:.2f}s"


async def _clients(redis: Redis, name: str, count: int) -> bool:
    clients = await redis.client_list()
    return sum(c.get("name") == name for c in clients) >= count


async def test_a_hanging_partner_holds_only_its_own_slots(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    # The hanging requests must outlast the wait for the healthy partner, and the claim idle
    # (the suite's 60 s) must outlast the request timeout and every wait below.
    hang_for = 30.0
    settings = config.load({**env, "NOTIFIER_REQUEST_TIMEOUT": f"{hang_for:g}s"})
    release = asyncio.Event()

    async def hang(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), hang_for)
        return web.Response(status=200)

    slow = await endpoint_factory(hang)
    healthy = await endpoint_factory()
    await register(redis, settings, "slow", slow.url, ["*"], max_in_flight=3)
    await register(redis, settings, "healthy", healthy.url, ["*"])
    async with running(settings):
        for i in range(300):
            await publish(redis, "order.created", {"n": i})
        await healthy.wait_for(300, timeout=20)
        # all of the healthy partner's messages arrived while the slow one hangs on 3 slots
        assert len(slow.received) == 3
        assert not release.is_set()
        release.set()
        await slow.wait_for(300, timeout=30)
        await idle(redis)
    assert sorted(b["data"]["n"] for b in healthy.bodies()) == list(range(300))


async def test_max_in_flight_holds_while_the_partner_is_changed(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    from notifier.models import PartnerPatch
    from notifier.store import Store

    open_now = {"n": 0, "most": 0}

    async def slowish(request: web.Request, n: int) -> web.StreamResponse:
        open_now["n"] += 1
        open_now["most"] = max(open_now["most"], open_now["n"])
        await asyncio.sleep(0.05)  # the partner's own latency
        open_now["n"] -= 1
        return web.Response(status=200)

    endpoint = await endpoint_factory(slowish)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"], max_in_flight=2)
    store = Store(redis, settings)
    async with running(settings):
        for i in range(60):
            await publish(redis, "order.created", {"n": i})
        for i in range(20):  # every change wakes the partner; none may start a second server
            await store.update(pid, PartnerPatch(name=f"p{i}"))
            await endpoint.wait_for(i + 1)
        await endpoint.wait_for(60)
        await idle(redis)
    assert open_now["most"] <= 2
