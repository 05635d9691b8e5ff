"""Crash recovery: a delivery process SIGKILLed mid-run, Redis restarted mid-run.

At-least-once: nothing may be lost; a message whose send was under way when its process died
(or whose outcome could not be recorded while Redis was away) may arrive twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import msgspec
import pytest
import structlog
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from notifier.redis import keys
from tests.helpers import (
    Endpoint,
    EndpointFactory,
    RedisServer,
    Spawn,
    eventually,
    idle,
    last_first_arrival,
    pending_by_consumer,
    register,
    running,
)

pytestmark = pytest.mark.slow

#: NOTIFIER_CLAIM_IDLE of the process the kill test kills: what it held comes back after it.
CLAIM_IDLE = 3.0
#: How long the rest of the work may take once nothing waits for an expiry any more: every
#: wait and bound below is far under 60 s, the NOTIFIER_CLAIM_IDLE of every process that lives
#: on, so a message stranded until a lease or visibility timeout ran out fails rather than
#: passes late.
REST = 10.0


def duplicates(endpoint: Endpoint) -> dict[str, int]:
    """webhook-id -> extra copies received."""
    seen = Counter(r.headers["webhook-id"] for r in endpoint.received)
    return {wid: count - 1 for wid, count in seen.items() if count > 1}


def delivered(endpoint: Endpoint) -> set[int]:
    return {body["data"]["n"] for body in endpoint.bodies()}


def report(endpoints: list[Endpoint], what: str) -> int:
    total = 0
    for i, endpoint in enumerate(endpoints):
        extra = duplicates(endpoint)
        total += sum(extra.values())
        if extra:
            print(f"{what}: partner {i}: {sum(extra.values())} duplicates: {sorted(extra)}")
    print(f"{what}: {total} duplicates in all")
    return total


async def test_delivery_process_killed_mid_run_loses_nothing(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    settings = config.load(env)
    partners, per_partner = 20, 100
    max_in_flight = 10

    async def slow_ok(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.1)  # keeps sends in flight long enough to crash among them
        return web.Response()

    endpoints = [await endpoint_factory(slow_ok) for _ in range(partners)]
    pids = [
        (
            await register(
                redis, settings, f"p{i}", endpoint.url, [f"evt.p{i}"], max_in_flight=max_in_flight
            )
        )[0]
        for i, endpoint in enumerate(endpoints)
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(per_partner):
            for i in range(partners):
                pipe.xadd(
                    "notifier:events", {"type": f"evt.p{i}", "data": msgspec.json.encode({"n": n})}
                )
        await pipe.execute()
    total = partners * per_partner

    def received() -> int:
        return sum(len(e.received) for e in endpoints)

    started = time.monotonic()
    # One process would lease all 20 partners at once (up to NOTIFIER_CONCURRENCY of them);
    # at 10 each, both processes have work when one is killed. What a process takes comes
    # back to the others after its own NOTIFIER_CLAIM_IDLE (its leases end after it too): short
    # for the victim, as that expiry is what this test is about, 60 s for the survivor, so
    # nothing it strands can pass within the waits below.
    victim, survivor = "deliver-1", "deliver-2"
    claim_idle = {victim: f"{CLAIM_IDLE:g}s", survivor: env["NOTIFIER_CLAIM_IDLE"]}
    workers = {
        name: spawn(
            "deliver",
            extra={
                "NOTIFIER_CONSUMER": name,
                "NOTIFIER_CONCURRENCY": "10",
                "NOTIFIER_CLAIM_IDLE": claim_idle[name],
            },
        )
        for name in (victim, survivor)
    }
    async with running(settings, deliver=False):

        async def both_busy() -> bool:
            held = await pending_by_consumer(redis, pids)
            return received() >= total // 10 and all(held[name] for name in workers)

        await eventually(both_busy, 2 * REST, "both delivery processes to be delivering")

        held = await pending_by_consumer(redis, pids)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(10)
        killed_at = time.monotonic()
        at_kill = received()
        print(
            f"killed {victim} holding {held[victim]} messages, {at_kill} of {total} "
            f"delivered, {time.monotonic() - started:.1f}s in"
        )
        assert at_kill < total, "everything was delivered before the kill"

        async def taken_back() -> bool:
            return not (await pending_by_consumer(redis, pids))[victim]

        # the killed process's messages are taken by the other after its claim idle, however
        # long the rest of the deliveries then take
        await eventually(taken_back, CLAIM_IDLE + REST, "the killed process's messages")
        recovered = time.monotonic() - killed_at
        for endpoint in endpoints:
            await endpoint.wait_for(per_partner, timeout=CLAIM_IDLE + 2 * REST)
        await idle(redis, REST)
    print(f"the killed process's messages taken back {recovered:.1f}s after the kill")
    assert recovered < CLAIM_IDLE + 7

    for i, endpoint in enumerate(endpoints):
        assert delivered(endpoint) == set(range(per_partner)), f"partner {i} lost messages"
    extra = report(endpoints, "delivery process killed")
    assert extra <= partners * max_in_flight
    assert received() == total + extra


async def test_redis_restart_mid_run_loses_nothing(
    redis: Redis, redis_server: RedisServer, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partners, events = 3, 500
    in_flight = 0

    async def counted(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal in_flight
        in_flight += 1
        try:
            await asyncio.sleep(0.02)
            return web.Response()
        finally:
            in_flight -= 1

    endpoints = [await endpoint_factory(counted) for _ in range(partners)]
    for i, endpoint in enumerate(endpoints):
        await register(redis, settings, f"p{i}", endpoint.url, ["order.created"])
    total = partners * events

    def received() -> int:
        return sum(len(e.received) for e in endpoints)

    fresh: Redis | None = None
    try:
        async with running(settings):
            async with redis.pipeline(transaction=False) as pipe:
                for n in range(events):
                    pipe.xadd(
                        "notifier:events",
                        {"type": "order.created", "data": msgspec.json.encode({"n": n})},
                    )
                await pipe.execute()
            await eventually(lambda: received() >= total // 5, 30, "some deliveries")

            with structlog.testing.capture_logs() as logged:
                await asyncio.to_thread(redis_server.stop)
                down_at = time.monotonic()
                at_stop = received()
                assert at_stop < total, "everything was delivered before Redis stopped"
                # Redis stays down until every request under way has been answered (so its
                # outcome met no Redis) and both loops gave up on their client's own retries.
                await eventually(lambda: in_flight == 0, 10, "requests under way to finish")

                def noticed() -> bool:
                    loops = {
                        e.get("loop") for e in logged if e["event"] == "redis unreachable, retrying"
                    }
                    return {"router", "delivery"} <= loops

                await eventually(noticed, 20, "notifier to notice that Redis is down")
            await asyncio.to_thread(redis_server.start)
            back_at = time.monotonic()
            print(f"redis down for {back_at - down_at:.2f}s after {at_stop} of {total} deliveries")

            fresh = Redis.from_url(redis_server.url)
            for endpoint in endpoints:
                await endpoint.wait_for(events, timeout=2 * REST)
            await idle(fresh, REST)
        recovered = last_first_arrival(endpoints) - back_at
        print(f"all delivered {recovered:.1f}s after Redis came back")
        assert recovered < REST  # nothing waited for a lease or a visibility timeout (60 s)

        for i, endpoint in enumerate(endpoints):
            assert delivered(endpoint) == set(range(events)), f"partner {i} lost messages"
        extra = report(endpoints, "redis restarted")
        # at most the requests under way when Redis went (max_in_flight 10 a partner)
        assert extra <= partners * 10
        assert received() == total + extra
        assert await fresh.xlen(keys.DEAD) == 0
    finally:
        if redis_server.proc is None:
            redis_server.start()
        if fresh is not None:
            await fresh.aclose()
