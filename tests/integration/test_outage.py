"""Redis going away, and replies lost on the way back: nothing a process held is left to expire.

NOTIFIER_CLAIM_IDLE is 60 s in these tests, so a lease or a taken message left to run out
fails them: before the fix, deliveries stopped for up to NOTIFIER_CLAIM_IDLE after an outage.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import msgspec
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.config import Settings
from notifier.redis import keys
from notifier.redis.autopipeline import AutoPipeline, Call
from tests.helpers import KS, Endpoint, EndpointFactory, RedisServer, idle, register, running

pytestmark = pytest.mark.slow


def copies(endpoint: Endpoint) -> Counter[int]:
    return Counter(body["data"]["n"] for body in endpoint.bodies())


async def publish_numbered(redis: Redis, count: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd(
                "notifier:events", {"type": "order.created", "data": msgspec.json.encode({"n": n})}
            )
        await pipe.execute()


async def test_redis_killed_for_10s_mid_stream_deliveries_resume_at_once(
    redis: Redis, redis_server: RedisServer, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partners, events = 3, 600

    async def slowish(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.01)  # keeps requests in flight when Redis dies
        return web.Response()

    endpoints = [await endpoint_factory(slowish) for _ in range(partners)]
    for i, endpoint in enumerate(endpoints):
        await register(redis, settings, f"p{i}", endpoint.url, ["order.created"])

    def received() -> int:
        return sum(len(e.received) for e in endpoints)

    fresh: Redis | None = None
    try:
        async with running(settings):
            await publish_numbered(redis, events)
            while received() < partners * events // 5:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(redis_server.stop, signal.SIGKILL)
            at_kill = received()
            assert at_kill < partners * events, "everything was delivered before the kill"
            await asyncio.sleep(10)  # the outage itself: ten seconds without Redis
            await asyncio.to_thread(redis_server.start)
            back = time.monotonic()
            fresh = Redis.from_url(redis_server.url)
            for endpoint in endpoints:
                await endpoint.wait_for(events, timeout=30)
            first_after = min(r.at for e in endpoints for r in e.received if r.at >= back)
            await idle(fresh, 30)
        resumed_in = first_after - back
        print(
            f"killed after {at_kill} deliveries; first delivery {resumed_in:.2f}s after "
            "Redis came back"
        )
        assert resumed_in < 2.0
        duplicates = 0
        for i, endpoint in enumerate(endpoints):
            got = copies(endpoint)
            assert set(got) == set(range(events)), f"partner {i} lost messages"
            duplicates += sum(count - 1 for count in got.values())
        print(f"{duplicates} duplicates (requests answered while Redis was down)")
        assert duplicates <= partners * 10  # at most what was in flight (max_in_flight 10)
        assert await fresh.xlen(keys.DEAD) == 0
        assert await fresh.zcard(KS.shards[0].leases) == 0
    finally:
        if redis_server.proc is None:
            redis_server.start()
        if fresh is not None:
            await fresh.aclose()


async def test_replies_lost_on_the_way_back_strand_nothing(
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every fifth auto-pipelined round trip runs in Redis but its replies are lost, as when a
    connection breaks just after the commands went out: leases, takes and settles whose
    replies never came. Every message still arrives exactly once, long before a lease or a
    visibility timeout (60 s here) could run out."""
    partners, events = 4, 300
    endpoints = [await endpoint_factory() for _ in range(partners)]
    for i, endpoint in enumerate(endpoints):
        await register(redis, settings, f"p{i}", endpoint.url, ["order.created"], max_in_flight=5)
    original = AutoPipeline._send
    round_trips = {"all": 0, "lost": 0}
    lost_scripts: Counter[str] = Counter()

    async def lossy(self: AutoPipeline, batch: list[Call]) -> None:
        round_trips["all"] += 1
        if round_trips["all"] % 5:
            await original(self, batch)
            return
        pipe = self.redis.pipeline(transaction=False)
        for script, script_keys, args, _ in batch:
            pipe.evalsha(script.sha, len(script_keys), *script_keys, *args)
        await pipe.execute(raise_on_error=False)  # it ran; the replies are dropped
        round_trips["lost"] += 1
        for script, _, _, future in batch:
            source = script.script
            assert isinstance(source, str)  # notifier registers its scripts as text
            lost_scripts[source.split()[1].rstrip(":")] += 1  # "-- take.lua: ..."
            if not future.done():
                future.set_exception(RedisConnectionError("connection lost (test)"))

    monkeypatch.setattr(AutoPipeline, "_send", lossy)
    started = time.monotonic()
    async with running(settings):
        await publish_numbered(redis, events)
        for endpoint in endpoints:
            await endpoint.wait_for(events, timeout=30)
        await idle(redis, 30)
    took = time.monotonic() - started
    print(
        f"{round_trips['lost']} of {round_trips['all']} round trips lost their replies "
        f"({dict(lost_scripts)}); all delivered in {took:.1f}s"
    )
    for i, endpoint in enumerate(endpoints):
        got = copies(endpoint)
        assert set(got) == set(range(events)), f"partner {i} lost messages"
        assert max(got.values()) == 1, f"partner {i} got duplicates"
    assert round_trips["lost"] >= 10
    assert {"lease.lua", "take.lua", "settle.lua"} <= set(lost_scripts)
    assert took < 30
    assert await redis.zcard(KS.shards[0].leases) == 0
