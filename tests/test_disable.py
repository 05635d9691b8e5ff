"""A partner failing every attempt for NOTIFIER_DISABLE_AFTER is disabled, its messages kept."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.models import PartnerPatch
from notifier.store import Store
from tests.helpers import eventually, idle, publish, register, running


async def test_failing_partner_is_disabled_then_resumes(redis: Redis, env: dict[str, str],
                                                        endpoint_factory) -> None:
    settings = config.load({**env, "NOTIFIER_DISABLE_AFTER": "1s",
                            "NOTIFIER_RETRY_SCHEDULE": ",".join(["150ms"] * 30)})
    healthy = {"on": False}

    async def respond(request: web.Request, n: int) -> web.Response:
        return web.Response(status=200 if healthy["on"] else 503)

    endpoint = await endpoint_factory(respond)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    store = Store(redis, settings)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await publish(redis, "order.created", {"n": 2})

        async def disabled() -> bool:
            return not (await store.get(pid)).enabled
        await eventually(disabled, 20, "the partner to be disabled")
        partner = await store.get(pid)
        assert "every attempt failed" in (partner.disabled_reason or "")
        assert await redis.xlen("notifier:dead") == 0, "messages of a disabled partner are kept"
        assert await redis.xlen(f"notifier:{{{pid}}}:stream") == 2
        tried = len(endpoint.received)
        assert await redis.zscore("notifier:ready", pid) is None

        healthy["on"] = True
        await store.update(pid, PartnerPatch(enabled=True))
        await eventually(lambda: len([r for r in endpoint.received[tried:]]) >= 2, 20,
                         "delivery to resume")
        await idle(redis)
    assert (await store.get(pid)).disabled_reason is None
    ok = [b["data"]["n"] for b in endpoint.bodies()[tried:]]
    assert sorted(ok) == [1, 2]
