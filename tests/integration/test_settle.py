"""A settle is told once: metrics, logs and operational events follow Redis's confirmation of a
batch's outcomes, and a settle sent again because its reply was lost is not told again."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier import ops
from notifier.config import Settings
from notifier.engine.delivery import DeliveryPool
from notifier.engine.sender import Sender
from notifier.redis.lua import Call, Scripts
from tests.helpers import EndpointFactory, eventually, idle, publish, register, running

pytestmark = pytest.mark.slow


async def failing(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=500)


async def test_a_settle_whose_reply_was_lost_is_sent_again_and_counted_once(
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every settle call runs in Redis but the first reply of each is lost, as when a
    connection breaks just after the call went out: the served partner sends it again when it
    gives the partner back. A message failing its whole schedule (four attempts) and one
    delivered at once are each counted once per attempt, and the dead letter is announced once
    (to a partner subscribed to the operational event)."""
    down = await endpoint_factory(failing)
    healthy = await endpoint_factory()
    watcher = await endpoint_factory()
    down_id, _ = await register(redis, settings, "down", down.url, ["order.created"])
    healthy_id, _ = await register(redis, settings, "healthy", healthy.url, ["order.paid"])
    await register(redis, settings, "watcher", watcher.url, [ops.DEAD_LETTERED])
    original = Scripts.send
    lost: list[Call[Any]] = []

    def lossy(self: Scripts, call: Call[Any]) -> asyncio.Future[Any]:
        reply = original(self, call)
        if call.script != "settle" or any(call is seen for seen in lost):
            return reply
        lost.append(call)
        dropped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def drop(ran: asyncio.Future[Any]) -> None:
            # it ran in Redis (or failed there); either way its caller hears of a lost reply
            if not ran.cancelled():
                ran.exception()
            dropped.set_exception(RedisConnectionError("reply lost (test)"))

        reply.add_done_callback(drop)
        return dropped

    monkeypatch.setattr(Scripts, "send", lossy)
    stop = asyncio.Event()
    async with Sender(settings, None) as sender, running(settings, deliver=False):
        pool = DeliveryPool(redis, settings, sender)
        task = asyncio.create_task(pool.run(stop))
        try:
            await publish(redis, "order.created", {"order_id": 1})
            await publish(redis, "order.paid", {"order_id": 1})
            await watcher.wait_for(1, timeout=20)
            await idle(redis)
            totals = pool.telemetry.metrics.totals

            def counted() -> bool:
                return totals[down_id].attempts == 4 and totals[healthy_id].attempts == 1

            await eventually(counted, 5, "every attempt counted")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert len(down.received) == 4 and len(healthy.received) == 1
    assert totals[down_id].failures == 4 and totals[healthy_id].failures == 0
    assert pool.telemetry.metrics.dead_total == 1
    assert len(watcher.received) == 1
    announced = json.loads(watcher.received[0].body)["data"]
    assert announced["partner"] == down_id and announced["attempts"] == 4
    # every settle of the two partners and the watcher lost its first reply
    assert len(lost) >= 6
