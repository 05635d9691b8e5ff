"""A partner failing every attempt for NOTIFIER_DISABLE_AFTER is disabled, its messages kept;
one answering 410 Gone is disabled at its first answer."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.config import Settings
from notifier.engine.served import BREAKER_AFTER
from notifier.models import PartnerPatch
from notifier.store import Store
from tests.helpers import EndpointFactory, eventually, idle, publish, register, running

DISABLE_AFTER = 2.0
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
        return web.Response(status=200 if healthy["on"] else 503)

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
        await store.update(pid, PartnerPatch(enabled=True))
        await eventually(
            lambda: len([r for r in endpoint.received[tried:]]) >= 2, 20, "delivery to resume"
        )
        await idle(redis)
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
        await store.update(pid, PartnerPatch(enabled=True))
        await endpoint.wait_for(4)
        await idle(redis)
    assert sorted(b["data"]["n"] for b in endpoint.bodies()[1:]) == [0, 1, 2]
    assert await redis.xlen("notifier:dead") == 0
