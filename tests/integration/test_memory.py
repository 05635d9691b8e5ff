"""Redis memory stays bounded: after 30,000 deliveries, and after 30,000 failures that were
retried and delivered, Redis holds what it held before, give or take 200 kB (under 7 bytes a
delivery: the window-log bug this test was written for grew by 145 bytes a delivery).

The bounded structures (attempt logs capped per partner, empty partner streams and their
groups) are filled to their caps by a warm-up first, so what is measured is growth.
"""

from __future__ import annotations

from collections import Counter

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.redis import keys
from notifier.store import attempts_of
from tests.helpers import Spawn, entries, eventually, idle, register

pytestmark = pytest.mark.slow

PARTNERS = 10
#: 3,000 events to 10 partners: 30,000 deliveries (scripts/bench's memory figures go further).
EVENTS = 3_000
#: Growth allowed (client buffers and allocator noise: 50 KB alone, up to 250 KB beside a
#: busy suite). It catches what leaks 17 bytes a delivery or more; the window log bug grew
#: by 14.5 MB, a key left per message (50 bytes at least) would grow by 1.5 MB.
SLACK = 500_000


class Counting:
    """A partner endpoint that only counts (30,000 recorded requests would be the test's
    own memory problem), optionally failing the first attempt of every message."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.fail_first = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        message_id = request.headers["webhook-id"]
        self.attempts[message_id] += 1
        if self.fail_first and self.attempts[message_id] == 1:
            return web.Response(status=500)
        return web.Response()

    def delivered(self) -> int:
        return sum(1 for count in self.attempts.values() if count >= 1 + self.fail_first)


async def used_memory(redis: Redis) -> int:
    """Redis's memory, less the attempt logs: those are capped by count (checked apart), and
    their size varies with what they hold (a failure's record carries its error)."""
    info = await redis.info("memory")
    logs = 0
    for key in await redis.keys("notifier:{*}:attempts"):
        # an entry is a settled batch: what is capped is the attempts they hold, about
        # ATTEMPTS_KEPT (MAXLEN ~ trims whole nodes of 100 entries, each of up to
        # max_in_flight attempts, 10 here)
        kept = sum(len(attempts_of(fields)) for _, fields in await entries(redis, key))
        assert kept <= keys.ATTEMPTS_KEPT + 100 * 10
        logs += await redis.memory_usage(key) or 0
    return int(info["used_memory"]) - logs


async def publish_many(redis: Redis, count: int, tag: str) -> None:
    for start in range(0, count, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 1000, count)):
                pipe.xadd(
                    "notifier:events",
                    {"type": "order.created", "data": f'{{"phase": "{tag}", "n": {n}}}'},
                )
            await pipe.execute()


@pytest.mark.timeout(300)  # 60,000 deliveries: slow on a busy 2-core machine
async def test_memory_returns_after_30k_deliveries_and_30k_retried_failures(
    redis: Redis, env: dict[str, str], settings: Settings, spawn: Spawn
) -> None:
    # The message index keeps every message for NOTIFIER_MESSAGE_RETENTION on purpose (its own
    # test checks that it is trimmed and expires); what must return is everything else.
    env["NOTIFIER_MESSAGE_RETENTION"] = "0"
    # Longer than the test may run (its timeout, 300 s), though not than its waits together:
    # a message stranded until its visibility timeout fails the test rather than passes late
    # (a phase takes seconds; its wait allows minutes only for a slow machine).
    env["NOTIFIER_CLAIM_IDLE"] = "600s"
    endpoints = [Counting() for _ in range(PARTNERS)]
    runners = []
    for endpoint in endpoints:
        app = web.Application()
        app.router.add_post("/hook", endpoint.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        endpoint.url = f"http://127.0.0.1:{port}/hook"
        runners.append(runner)
        await register(redis, settings, f"p{len(runners)}", endpoint.url, ["*"], max_in_flight=50)
    spawn("router")
    spawn("deliver")

    async def phase(events: int, tag: str) -> None:
        for endpoint in endpoints:
            endpoint.attempts.clear()
        await publish_many(redis, events, tag)

        def done() -> bool:
            return all(e.delivered() >= events for e in endpoints)

        await eventually(done, 240, f"{tag}: {events} deliveries to each partner")
        await idle(redis, 60)

    try:
        # fills each partner's attempt log to its cap, creates the streams and groups
        await phase(keys.ATTEMPTS_KEPT + 100, "warm-up")
        before = await used_memory(redis)

        await phase(EVENTS, "deliveries")
        after_deliveries = await used_memory(redis)
        assert all(len(e.attempts) == EVENTS for e in endpoints)

        for endpoint in endpoints:
            endpoint.fail_first = True
        await phase(EVENTS, "failures")
        after_failures = await used_memory(redis)
        assert all(e.attempts.most_common(1)[0][1] == 2 for e in endpoints)
    finally:
        for runner in runners:
            await runner.cleanup()

    print(
        f"redis used_memory: {before} before, {after_deliveries} after 30k deliveries, "
        f"{after_failures} after 30k retried failures"
    )
    assert after_deliveries - before < SLACK
    assert after_failures - before < SLACK
    assert await redis.xlen(keys.DEAD) == 0
