"""Adaptive pacing against real Redis, real endpoints and real delivery processes: a partner
over its capacity is paced until its 429s fade, paced back up when its capacity returns, paused
whole by a Retry-After, paced as one by two delivery processes, and never taken for down.

Every wait polls; the only times asserted are what the partner asked for (a Retry-After) and
how soon a recovered partner is back at its limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.test_utils
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config, ops, pacing
from notifier.admin import app as api
from notifier.config import Settings
from notifier.redis import keys
from notifier.store import Store
from notifier.testing import Capacity
from tests.helpers import (
    KS,
    TOKEN,
    EndpointFactory,
    Spawn,
    cli,
    entries,
    eventually,
    idle,
    publish,
    register,
    running,
    stop_running,
)

pytestmark = pytest.mark.slow

#: A short schedule: without pacing, throttled messages run out of it within the test.
SCHEDULE = "100ms,100ms"


def with_env(env: dict[str, str], **more: str) -> Settings:
    return config.load({**env, "NOTIFIER_RETRY_SCHEDULE": SCHEDULE, **more})


async def backlog(redis: Redis, count: int, event_type: str = "order.created") -> None:
    """`count` events routed before delivery starts, so the partner always has work."""
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.xadd("notifier:events", {"type": event_type, "data": f'{{"n": {n}}}'})
        await pipe.execute()


def delivered(capacity: Capacity) -> int:
    return sum(1 for _, status in capacity.answers if status == 200)


def share(answers: list[tuple[float, int]], status: int) -> float:
    return sum(1 for _, s in answers if s == status) / max(1, len(answers))


async def dead_letters(redis: Redis) -> int:
    return int(await redis.xlen(keys.DEAD))


@contextlib.asynccontextmanager
async def sampling(
    sample: Callable[[], Awaitable[None]], every: float = 0.01
) -> AsyncIterator[None]:
    """Run `sample` every `every` s in the background while the block runs. Stopped between
    samples, never cancelled inside one: a command cancelled mid-reply would leave the shared
    client's connection for the test's next command to trip over."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task


async def test_a_partner_over_its_capacity_is_paced_until_its_429s_fade(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """No rate limit configured: it takes 30 requests a second and refuses the rest. Paced,
    every message arrives with few requests spent on refusals, most of them early on."""
    settings = with_env(env)
    capacity = Capacity(30)
    endpoint = await endpoint_factory(capacity)
    await register(redis, settings, "busy", endpoint.url, ["*"])
    await backlog(redis, 300)
    async with running(settings):
        await eventually(lambda: delivered(capacity) >= 300, 30, "300 deliveries")
        await idle(redis)
    answers = capacity.answers
    refused = [round(t - answers[0][0], 2) for t, s in answers if s == 429]
    report = f"{len(answers)} requests, 429s at {refused}"
    assert await dead_letters(redis) == 0
    accepted = [
        r.headers["webhook-id"]
        for r, (_, s) in zip(endpoint.received, answers, strict=True)
        if s == 200
    ]
    assert len(accepted) == len(set(accepted)) == 300
    assert len(answers) < 1.3 * 300, report  # unpaced, it is several requests a message
    early, late = answers[:100], answers[len(answers) // 2 :]
    assert share(late, 429) < 0.15, report
    assert share(early, 429) > share(late, 429), report


async def test_a_partner_holding_requests_is_paced_long_before_they_time_out(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """It takes 30 requests a second and holds the rest past the 4 s timeout. Its held
    requests are told to the pace as held (open eight times its usual answer): it is paced
    within half the timeout of the first, not a timeout later, and every message arrives."""
    settings = with_env(env, NOTIFIER_REQUEST_TIMEOUT="4s")
    capacity = Capacity(30, status=0, hang=60)
    endpoint = await endpoint_factory(capacity)
    pid, _ = await register(redis, settings, "holding", endpoint.url, ["*"])
    pace_key = KS.partner(pid).pace
    await backlog(redis, 150)
    async with running(settings):
        await eventually(lambda: any(s == 0 for _, s in capacity.answers), 20, "a held request")
        first_held = next(t for t, s in capacity.answers if s == 0)
        await eventually(lambda: _exists(redis, pace_key), 10, "the partner to be paced")
        paced_after = time.monotonic() - first_held
        why = await redis.hget(pace_key, "y")
        await eventually(lambda: delivered(capacity) >= 150, 20, "150 deliveries")
    assert why == b"held"
    assert paced_after < 2.0, paced_after
    assert await dead_letters(redis) == 0


async def test_the_api_and_the_cli_show_a_partners_pacing(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """While a partner is paced, `GET /v1/partners/{id}` and `notifier partners show` give
    the same `pacing`: its rate and concurrency, since when and why; null once it ends."""
    settings = with_env(env)
    endpoint = await endpoint_factory(Capacity(30))
    pid, _ = await register(redis, settings, "busy", endpoint.url, ["*"])
    pace_key = KS.partner(pid).pace
    await backlog(redis, 300)
    async with running(settings):
        await eventually(lambda: _exists(redis, pace_key), 20, "the partner to be paced")
    # nothing runs now: the pace stays as the last settle left it (for a minute)
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.test_utils.TestClient(server) as http:

        async def shown() -> Any:
            async with http.get(f"/v1/partners/{pid}", headers=bearer) as resp:
                assert resp.status == 200
                return (await resp.json())["pacing"]

        paced = await shown()
        assert paced is not None and paced["reason"] == "HTTP 429", paced
        assert paced["rate"] > 0 and paced["concurrency"] >= 1 and paced["paused_until"] is None
        assert paced["since"].endswith("Z")
        printed = cli(env, "partners", "show", pid, "--json")
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout)["pacing"] == paced
        await redis.delete(pace_key)  # as when it ends
        assert await shown() is None


async def test_a_recovered_partner_is_paced_back_up_to_its_limits(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_env(env)
    capacity = Capacity(5)
    endpoint = await endpoint_factory(capacity)
    pid, _ = await register(
        redis, settings, "recovering", endpoint.url, ["*"], rate_limit="40/second", max_in_flight=4
    )

    async def steady() -> None:
        for n in range(100_000):
            await publish(redis, "order.created", {"n": n})
            await asyncio.sleep(0.03)  # about 30 events a second

    flow = asyncio.create_task(steady())
    try:
        async with running(settings):

            async def slowed() -> bool:
                shown = await pacing.read(redis, KS, pid)
                return shown is not None and shown.rate < 10

            await eventually(slowed, 20, "the partner paced below its capacity")
            capacity.per_second = 10_000
            back = time.monotonic()
            await eventually(
                lambda: _unpaced(redis, pid), 30, "the pace back at the partner's limits"
            )
            took = time.monotonic() - back
            # at most 40 a second again, none refused
            seen = len(capacity.answers)
            await endpoint.wait_for(len(endpoint.received) + 60)
    finally:
        flow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flow
    assert took < 20, f"the pace took {took:.1f}s to grow back to 40/second"
    assert share(capacity.answers[seen:], 429) == 0
    assert await dead_letters(redis) == 0


async def _exists(redis: Redis, key: str) -> bool:
    return bool(await redis.exists(key))


async def _unpaced(redis: Redis, pid: str) -> bool:
    return await pacing.read(redis, KS, pid) is None and not await redis.exists(
        KS.partner(pid).pace
    )


async def test_a_retry_after_pauses_the_whole_partner_and_only_it(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_env(env)

    async def busy_once(request: web.Request, n: int) -> web.StreamResponse:
        if n == 6:
            return web.Response(status=429, headers={"Retry-After": "5"}, text="slow down")
        return web.Response()

    paused = await endpoint_factory(busy_once)
    other = await endpoint_factory()
    pid, _ = await register(
        redis, settings, "paused", paused.url, ["order.created"], max_in_flight=1
    )
    await register(redis, settings, "other", other.url, ["order.paid"])
    await backlog(redis, 20)
    async with running(settings):
        await paused.wait_for(6)
        refused = paused.received[5].at

        async def shown_paused() -> bool:
            shown = await pacing.read(redis, KS, pid)
            return shown is not None and shown.paused_until is not None

        await eventually(shown_paused, 5, "the API to show the partner paused")
        assert (await pacing.read(redis, KS, pid)).reason == "HTTP 429"  # type: ignore[union-attr]
        for n in range(20):
            await publish(redis, "order.paid", {"n": n})
        await other.wait_for(20)
        await paused.wait_for(20 + 1)
        await idle(redis)
    assert other.received[-1].at < paused.received[6].at  # the other partner did not wait
    gap = paused.received[6].at - refused
    assert gap >= 4.99, f"the partner's next request came {gap:.3f}s after Retry-After: 5"
    # the refused message was sent again, once; it took no step of its retry schedule
    ids = [r.headers["webhook-id"] for r in paused.received]
    assert len(set(ids)) == 20 and ids.count(ids[5]) == 2


async def test_two_delivery_processes_pace_a_partner_as_one(
    redis: Redis,
    env: dict[str, str],
    settings: Settings,
    endpoint_factory: EndpointFactory,
    spawn: Spawn,
) -> None:
    """A partner with three workers answers 503 beyond three requests at once. One delivery
    process paces it, then hands it to another (SIGTERM): at every arrival, the requests open
    at the endpoint are within the pace in Redis, which the second process read rather than
    starting again from max_in_flight."""
    env["NOTIFIER_RETRY_SCHEDULE"] = SCHEDULE
    open_now = {"n": 0}
    arrivals: list[tuple[float, int]] = []  # (when, requests open with it)
    paces: list[tuple[float, float]] = []  # (when, the pace's concurrency; max_in_flight unpaced)

    async def three_workers(request: web.Request, n: int) -> web.StreamResponse:
        open_now["n"] += 1
        arrivals.append((time.monotonic(), open_now["n"]))
        try:
            if open_now["n"] > 3:
                return web.Response(status=503, text="all workers busy")
            await asyncio.sleep(0.03)
            return web.Response()
        finally:
            open_now["n"] -= 1

    endpoint = await endpoint_factory(three_workers)
    pid, _ = await register(redis, settings, "workers", endpoint.url, ["*"], max_in_flight=10)
    pace_key = KS.partner(pid).pace

    async def sample() -> None:
        found = await redis.hget(pace_key, "c")
        paces.append((time.monotonic(), float(found) if found else 10.0))

    await backlog(redis, 400)
    async with sampling(sample), running(settings, deliver=False):
        first = spawn("deliver", extra={"NOTIFIER_CONSUMER": "deliver-1"})
        await eventually(lambda: _exists(redis, pace_key), 20, "the partner to be paced")
        await endpoint.wait_for(100)
        second = spawn("deliver", extra={"NOTIFIER_CONSUMER": "deliver-2"})
        handed = time.monotonic()
        stop_running([first])
        await endpoint.wait_for(len(endpoint.received) + 100)
        stop_running([second])
    after = [a for a in arrivals if a[0] > handed]
    assert after, "the second process sent nothing"
    for at, opened in arrivals:
        # the pace only shrinks at once; it grows by about a request a second at most
        bound = max((c for t, c in paces if at - 1.0 <= t <= at + 0.05), default=10.0)
        assert opened <= math.floor(bound), f"{opened} open at {at:.3f} with a pace of {bound}"
    assert await dead_letters(redis) == 0


async def test_paced_is_not_failing(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """With a retry schedule of three tries and NOTIFIER_DISABLE_AFTER of two seconds, a
    partner over its capacity loses nothing paced: no dead letter, no breaker, no failing
    run, not disabled. The same partner unpaced (NOTIFIER_PACING=0) loses messages."""
    lost: dict[str, int] = {}
    for on in ("1", "0"):
        await redis.flushall()
        settings = with_env(env, NOTIFIER_DISABLE_AFTER="2s", NOTIFIER_PACING=on)
        capacity = Capacity(20)
        endpoint = await endpoint_factory(capacity)
        pid, _ = await register(redis, settings, "busy", endpoint.url, ["*"])
        partner = KS.partner(pid)
        seen: set[str] = set()

        async def watch(partner: keys.PartnerKeys = partner, seen: set[str] = seen) -> None:
            for key in (partner.breaker, partner.failing):
                if await redis.exists(key):
                    seen.add(key.rsplit(":", 1)[1])

        await backlog(redis, 200)
        async with sampling(watch), running(settings):

            async def settled(capacity: Capacity = capacity) -> bool:
                return delivered(capacity) + await dead_letters(redis) >= 200

            await eventually(settled, 30, "every message delivered or dead-lettered")
            await idle(redis)
        lost[on] = await dead_letters(redis)
        types = [fields[b"type"].decode() for _, fields in await entries(redis, keys.OPS)]
        if on == "1":
            assert lost[on] == 0 and delivered(capacity) == 200
            assert seen == set(), f"paced, yet {seen} was set"
            assert (await Store(redis, settings).get(pid)).enabled
            assert ops.PARTNER_PACED in types
            assert not {ops.BREAKER_OPENED, ops.PARTNER_DISABLED} & set(types)
    assert lost["0"] > 0, "unpaced, the partner should have lost messages to its 429s"
