"""A partner failing every attempt for NOTIFIER_DISABLE_AFTER is disabled, its messages kept;
one answering 410 Gone is disabled at its first answer; one failing half the time never is,
and a success starts the clock again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aiohttp import web
from redis.asyncio import Redis

from notifier import config, ops
from notifier.config import Settings
from notifier.engine.breaker import BREAKER_AFTER
from notifier.models import PartnerPatch
from notifier.redis import keys
from notifier.store import Store
from tests.helpers import EndpointFactory, entries, eventually, idle, publish, register, running

DISABLE_AFTER = 2.0
#: How soon delivery must resume once a partner is enabled again: generous for a busy
#: machine, far under the 60 s NOTIFIER_CLAIM_IDLE after which a lease or message left
#: behind would come back.
RESUMED_WITHIN = 10.0
#: Longer than a few retry delays and breaker pauses: a partner still scheduled would be
#: tried again within it. Absence cannot be polled for, so this is waited out.
QUIET = 1.0


async def disabled_at(store: Store, pid: str, timeout: float = 20) -> float:
    """Poll until the partner is disabled; when that was seen (the clock endpoints use)."""

    async def disabled() -> bool:
        return not (await store.get(pid)).enabled

    await eventually(disabled, timeout, "the partner to be disabled")
    return time.monotonic()


async def test_failing_partner_is_disabled_then_resumes(
    redis: Redis,
    env: dict[str, str],
    endpoint_factory: EndpointFactory,
) -> None:
    # DISABLE_AFTER is twice BREAKER_AFTER, so disabling when the breaker trips is caught.
    assert DISABLE_AFTER >= 2 * BREAKER_AFTER
    settings = config.load(
        {
            **env,
            "NOTIFIER_DISABLE_AFTER": f"{DISABLE_AFTER:g}s",
            "NOTIFIER_RETRY_SCHEDULE": ",".join(["150ms"] * 30),
        }
    )
    healthy = {"on": False}

    async def respond(request: web.Request, n: int) -> web.Response:
        return web.Response(status=200 if healthy["on"] else 500)

    endpoint = await endpoint_factory(respond)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    store = Store(redis, settings)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await publish(redis, "order.created", {"n": 2})
        seen = await disabled_at(store, pid)
        first = endpoint.received[0].at
        # Failing since is stamped after the first answer, so the partner cannot be disabled
        # (let alone seen disabled) before DISABLE_AFTER has passed since the first request;
        # 50 ms allow for the wall clock notifier reads against the monotonic one here.
        assert seen - first >= DISABLE_AFTER - 0.05, (
            f"disabled {seen - first:.3f}s after the first try"
        )
        # After the breaker trips, probes come every 150 ms: the first judged after the mark
        # disables it; a generous second covers polling and a slow machine.
        assert seen - first < DISABLE_AFTER + 1, f"disabled {seen - first:.3f}s after the first"
        partner = await store.get(pid)
        assert partner.disabled_reason == f"every attempt failed for {DISABLE_AFTER:g}s"
        # The last request is the probe whose failure was judged past the mark: sent at most
        # a request's latency before it.
        last = endpoint.received[-1].at
        assert DISABLE_AFTER - 0.25 <= last - first <= seen - first, (
            f"last request {last - first:.3f}s after the first, disabled seen at "
            f"{seen - first:.3f}s"
        )

        await asyncio.sleep(QUIET)
        assert endpoint.received[-1].at == last, "a disabled partner was sent requests"
        assert await redis.xlen("notifier:dead") == 0, "messages of a disabled partner are kept"
        assert await redis.xlen(f"notifier:{{{pid}}}:stream") == 2
        tried = len(endpoint.received)
        assert await redis.zscore("notifier:ready", pid) is None

        healthy["on"] = True
        enabled_at = time.monotonic()
        await store.update(pid, PartnerPatch(enabled=True))
        await eventually(
            lambda: len([r for r in endpoint.received[tried:]]) >= 2, 20, "delivery to resume"
        )
        await idle(redis)
    # enabling wakes the partner at once, not when a lease or visibility timeout ran out
    resumed_in = endpoint.received[tried].at - enabled_at
    assert resumed_in < RESUMED_WITHIN, f"delivery resumed {resumed_in:.2f}s after enabling"
    assert (await store.get(pid)).disabled_reason is None
    ok = [b["data"]["n"] for b in endpoint.bodies()[tried:]]
    assert sorted(ok) == [1, 2]


async def test_gone_disables_at_the_first_answer(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    back = {"on": False}

    async def gone(request: web.Request, n: int) -> web.Response:
        return web.Response(status=200 if back["on"] else 410, text="no such hook")

    endpoint = await endpoint_factory(gone)
    # One request at a time, so "at once" can be counted: with more, the first take would
    # send several messages before any answer came back.
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"], max_in_flight=1)
    store = Store(redis, settings)
    async with running(settings):
        for n in range(3):
            await publish(redis, "order.created", {"n": n})
        seen = await disabled_at(store, pid)
        assert len(endpoint.received) == 1
        # At once: not after the breaker's BREAKER_AFTER nor NOTIFIER_DISABLE_AFTER (5 days).
        assert seen - endpoint.received[0].at < BREAKER_AFTER / 2
        assert (await store.get(pid)).disabled_reason == "endpoint answered 410 Gone"

        # Two messages were never tried and the third is due again within 200 ms: a partner
        # still scheduled would be sent them within QUIET.
        await asyncio.sleep(QUIET)
        assert len(endpoint.received) == 1, "a partner gone was sent more requests"
        assert await redis.xlen("notifier:dead") == 0, "a gone partner's messages are kept"
        assert await redis.xlen(f"notifier:{{{pid}}}:stream") == 3

        back["on"] = True
        enabled_at = time.monotonic()
        await store.update(pid, PartnerPatch(enabled=True))
        await endpoint.wait_for(4)
        await idle(redis)
    resumed_in = endpoint.received[1].at - enabled_at
    assert resumed_in < RESUMED_WITHIN, f"delivery resumed {resumed_in:.2f}s after enabling"
    assert sorted(b["data"]["n"] for b in endpoint.bodies()[1:]) == [0, 1, 2]
    assert await redis.xlen("notifier:dead") == 0


async def test_a_partner_failing_half_the_time_never_trips_nor_is_disabled(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """The breaker and auto-disable act when every attempt fails: a partner failing half of
    its attempts, for longer than both BREAKER_AFTER and NOTIFIER_DISABLE_AFTER, gets every
    message and no operational event about its health."""
    settings = config.load(
        {
            **env,
            "NOTIFIER_DISABLE_AFTER": f"{DISABLE_AFTER:g}s",
            "NOTIFIER_RETRY_SCHEDULE": ",".join(["100ms"] * 10),
        }
    )

    tries: Counter[str] = Counter()

    async def first_try_fails(request: web.Request, n: int) -> web.Response:
        """Half the attempts fail: every message's first, never its second (a message is
        never unlucky enough to be dead-lettered)."""
        await asyncio.sleep(0.02)  # about 50 requests a second: the run outlasts both marks
        tries[request.headers["webhook-id"]] += 1
        return web.Response(status=500 if tries[request.headers["webhook-id"]] == 1 else 200)

    endpoint = await endpoint_factory(first_try_fails)
    # one request at a time, so failures and successes alternate batch by batch too
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"], max_in_flight=1)
    store = Store(redis, settings)
    async with running(settings):
        for n in range(100):
            await publish(redis, "order.created", {"n": n})
        await idle(redis, 30)
    arrivals = [r.at for r in endpoint.received]
    assert arrivals[-1] - arrivals[0] > DISABLE_AFTER + BREAKER_AFTER
    assert sorted({b["data"]["n"] for b in endpoint.bodies()}) == list(range(100))
    assert set(tries.values()) == {2}  # exactly half of the attempts failed
    assert (await store.get(pid)).enabled
    assert await redis.xlen("notifier:dead") == 0
    health = {ops.BREAKER_OPENED, ops.PARTNER_DISABLED}
    told = [fields[b"type"].decode() for _, fields in await entries(redis, keys.OPS)]
    assert not health & set(told), told


async def test_a_success_restarts_the_disable_clock(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """One success three quarters of the way to NOTIFIER_DISABLE_AFTER, then failures again:
    the partner is disabled DISABLE_AFTER after that success, not after the first failure."""
    settings = config.load(
        {
            **env,
            "NOTIFIER_DISABLE_AFTER": f"{DISABLE_AFTER:g}s",
            "NOTIFIER_RETRY_SCHEDULE": ",".join(["150ms"] * 40),
        }
    )
    succeeded: list[float] = []
    started: list[float] = []

    async def one_success(request: web.Request, n: int) -> web.Response:
        now = time.monotonic()
        if not started:
            started.append(now)
        if not succeeded and now - started[0] >= DISABLE_AFTER * 0.75:
            succeeded.append(now)
            return web.Response(status=200)
        return web.Response(status=500)

    endpoint = await endpoint_factory(one_success)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"], max_in_flight=1)
    store = Store(redis, settings)
    async with running(settings):
        for n in range(5):
            await publish(redis, "order.created", {"n": n})
        seen = await disabled_at(store, pid)
    assert succeeded, "the success never came"
    assert seen - succeeded[0] >= DISABLE_AFTER - 0.05, (
        f"disabled {seen - succeeded[0]:.3f}s after the success"
    )
    assert seen - succeeded[0] < DISABLE_AFTER + 1
    assert (await store.get(pid)).disabled_reason == f"every attempt failed for {DISABLE_AFTER:g}s"
