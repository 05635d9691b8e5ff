"""The core pipeline against real Redis and real endpoints: publish -> route -> deliver."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import msgspec
import pytest
import standardwebhooks
from redis.asyncio import Redis

from notifier import __version__, config
from notifier.config import Settings
from tests.helpers import (
    Endpoint,
    EndpointFactory,
    Received,
    Spawn,
    entries,
    eventually,
    idle,
    publish,
    register,
    running,
    stop_running,
)

pytestmark = pytest.mark.cluster


def verify(secret: str, received: Received) -> dict[str, object]:
    """Check a request the way a partner would, with the standardwebhooks package."""
    wh = standardwebhooks.Webhook(secret)
    payload: dict[str, object] = wh.verify(received.body, received.headers)
    return payload


async def test_event_reaches_each_subscribed_partner_once(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    orders = await endpoint_factory()
    reviews = await endpoint_factory()
    nobody = await endpoint_factory()
    _, orders_secret = await register(redis, settings, "orders", orders.url, ["order.created"])
    _, reviews_secret = await register(
        redis, settings, "reviews", reviews.url, ["*"], headers={"x-api-key": "k-123"}
    )
    await register(redis, settings, "nobody", nobody.url, ["refund.issued"])

    async with running(settings):
        entry = await publish(redis, "order.created", {"order_id": 42, "total": 99.5})
        await orders.wait_for(1)
        await reviews.wait_for(1)
        await idle(redis)

    assert len(orders.received) == 1
    assert len(reviews.received) == 1
    assert nobody.received == []
    for got, secret in ((orders.received[0], orders_secret), (reviews.received[0], reviews_secret)):
        headers = {k.lower(): v for k, v in got.headers.items()}
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == f"notifier/{__version__}"
        assert headers["webhook-id"] == f"msg_{entry}"
        assert headers["webhook-timestamp"].isdigit()
        assert headers["webhook-signature"].startswith("v1,")
        body = json.loads(got.body)
        assert body["type"] == "order.created"
        assert body["data"] == {"order_id": 42, "total": 99.5}
        assert body["timestamp"].endswith("Z") and body["timestamp"][:2] == "20"
        assert verify(secret, got) == body
    assert {k.lower(): v for k, v in reviews.received[0].headers.items()}["x-api-key"] == "k-123"


async def test_overlapping_subscriptions_and_a_new_type(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    a, b, c = [await endpoint_factory() for _ in range(3)]
    await register(redis, settings, "a", a.url, ["order.created", "order.paid"])
    await register(redis, settings, "b", b.url, ["order.paid", "review.requested"])
    await register(redis, settings, "c", c.url, ["*"])

    async with running(settings):
        for i, event_type in enumerate(
            ["order.created", "order.paid", "review.requested", "loyalty.points-earned"]
        ):
            await publish(redis, event_type, {"n": i})
        await c.wait_for(4)
        await idle(redis)

    def types(endpoint: Endpoint) -> list[str]:
        return sorted(body["type"] for body in endpoint.bodies())

    assert types(a) == ["order.created", "order.paid"]
    assert types(b) == ["order.paid", "review.requested"]
    assert types(c) == ["loyalty.points-earned", "order.created", "order.paid", "review.requested"]


async def test_producer_id_is_delivered_once_per_partner(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partner = await endpoint_factory()
    await register(redis, settings, "p", partner.url, ["*"])
    async with running(settings):
        for _ in range(3):
            await publish(redis, "order.paid", {"order_id": 7}, event_id="ord-7-paid")
        await publish(redis, "order.paid", {"order_id": 8}, event_id="ord-8-paid")
        await partner.wait_for(2)
        await idle(redis)
    ids = [r.headers["webhook-id"] for r in partner.received]
    assert sorted(ids) == ["ord-7-paid", "ord-8-paid"]


async def test_malformed_events_are_dead_lettered_and_routing_goes_on(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partner = await endpoint_factory()
    await register(redis, settings, "p", partner.url, ["*"])
    async with running(settings):
        await redis.xadd("notifier:events", {"data": "{}"})
        await redis.xadd("notifier:events", {"type": "order.created", "data": "[1, 2]"})
        await redis.xadd("notifier:events", {"type": "Bad Type!", "data": "{}"})
        await redis.xadd("notifier:events", {"type": "order.created", "data": "{not json"})
        await redis.xadd(
            "notifier:events", {"type": "order.created", "data": json.dumps({"x": "y" * 300_000})}
        )
        await publish(redis, "order.created", {"order_id": 1})
        await partner.wait_for(1)
        await idle(redis)
    assert [b["data"] for b in partner.bodies()] == [{"order_id": 1}]
    dead = await entries(redis, "notifier:dead")
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert len(reasons) == 5
    assert reasons[0] == "missing field: type"
    assert reasons[1].startswith("data is not a JSON object")
    assert "may only contain lower-case letters" in reasons[2]
    assert reasons[3].startswith("data is not a JSON object")
    assert "NOTIFIER_MAX_EVENT_BYTES" in reasons[4]
    # the producer's fields are kept whole, so nothing is lost
    kept = json.loads(dead[1][1][b"entry"])
    assert kept == {"type": "order.created", "data": "[1, 2]"}


async def test_partner_change_takes_effect_without_restart(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    first, second = await endpoint_factory(), await endpoint_factory()
    from notifier.models import PartnerPatch
    from notifier.store import Store

    pid, _ = await register(redis, settings, "p", first.url, ["order.created"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await first.wait_for(1)
        await Store(redis, settings).update(
            pid, PartnerPatch(url=second.url, events=["order.paid"])
        )
        await publish(redis, "order.created", {"n": 2})
        await publish(redis, "order.paid", {"n": 3})
        await second.wait_for(1)
        await idle(redis)
    assert [b["data"]["n"] for b in first.bodies()] == [1]
    assert [b["data"]["n"] for b in second.bodies()] == [3]


async def test_router_killed_mid_stream_loses_and_duplicates_nothing(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    settings = config.load(env)
    partners = [await endpoint_factory() for _ in range(3)]
    for i, endpoint in enumerate(partners):
        await register(redis, settings, f"p{i}", endpoint.url, ["*"])
    total = 3000
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(total):
            pipe.xadd(
                "notifier:events", {"type": "order.created", "data": msgspec.json.encode({"n": i})}
            )
        await pipe.execute()

    # the router is a real process, killed with SIGKILL partway through the stream
    router = spawn("router", extra={"NOTIFIER_CONSUMER": "router-1"})

    async def partly_routed() -> bool:
        length = await redis.xlen("notifier:events")
        return 0 < length < total - 200

    await eventually(partly_routed, 30, "the router to route part of the stream")
    router.send_signal(signal.SIGKILL)
    router.wait(10)
    killed_at = time.monotonic()
    assert await redis.xlen("notifier:events") > 0, "router finished before it was killed"
    held = (await redis.xpending("notifier:events", "router"))["pending"]

    # What the killed router read is claimed after the claiming router's NOTIFIER_CLAIM_IDLE:
    # short for this one, as that expiry is what this test is about. It would claim what it
    # stranded itself as soon, so it logs each claim (counted below); the delivery process
    # keeps the suite's 60 s, longer than every wait below.
    claim_idle = 3.0
    claimer = spawn(
        "router",
        extra={
            "NOTIFIER_CONSUMER": "router-2",
            "NOTIFIER_CLAIM_IDLE": f"{claim_idle:g}s",
            "NOTIFIER_LOG_LEVEL": "info",
        },
    )
    async with running(settings, route=False):

        async def claimed() -> bool:
            left = await redis.xpending_range(
                "notifier:events", "router", min="-", max="+", count=1, consumername="router-1"
            )
            return not left

        # claimed after the claim idle (it looks every half of that), however long the
        # deliveries then take
        await eventually(claimed, 20, "the killed router's entries to be claimed")
        recovered = time.monotonic() - killed_at
        for endpoint in partners:
            await endpoint.wait_for(total, timeout=30)
        await idle(redis, 20)
    print(f"the {held} entries of the killed router claimed {recovered:.1f}s after the kill")
    # a router starting on a busy machine, then its next look
    assert recovered < claim_idle + 12
    (logged,) = stop_running([claimer])
    claims = [json.loads(line) for line in logged.splitlines() if "claimed entries" in line]
    assert sum(claim["count"] for claim in claims) == held, "a router claimed what it stranded"

    for endpoint in partners:
        seen = Counter(b["data"]["n"] for b in endpoint.bodies())
        assert set(seen) == set(range(total)), "an event was lost"
        duplicates = sum(count - 1 for count in seen.values())
        assert duplicates == 0, f"{duplicates} duplicates after a router crash"


async def test_sigterm_lets_open_requests_finish(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    import asyncio

    from aiohttp import web

    async def slow(request: web.Request, n: int) -> web.Response:
        await asyncio.sleep(1.0)  # the partner's own slowness, not a wait in the test
        return web.Response(status=200)

    endpoint = await endpoint_factory(slow)
    pid, _ = await register(redis, settings, "slow", endpoint.url, ["*"], max_in_flight=5)
    async with running(settings, deliver=False):
        for i in range(5):
            await publish(redis, "order.created", {"n": i})
        deliver = spawn("deliver")
        await endpoint.wait_for(5)
        deliver.send_signal(signal.SIGTERM)  # while all five requests are open
        assert await asyncio.to_thread(deliver.wait, 20) == 0
    # the stopping process finished and settled every open request before it exited
    partner = settings.keyspace().partner(pid)
    assert await redis.xlen(partner.stream) == 0
    assert await redis.zcard(partner.due) == 0
    assert len(endpoint.received) == 5


async def test_redis_that_comes_back_empty_gets_its_groups_back(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    first, second = await endpoint_factory(), await endpoint_factory()
    await register(redis, settings, "before", first.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await first.wait_for(1)
        await idle(redis)
        # what a Redis without persistence looks like after a restart: no streams, no groups
        await redis.flushall()
        await register(redis, settings, "after", second.url, ["*"])
        await publish(redis, "order.created", {"n": 2})
        await second.wait_for(1)
        await idle(redis)
    assert [b["data"]["n"] for b in second.bodies()] == [2]
    groups = await redis.xinfo_groups("notifier:events")
    assert [g["name"] for g in groups] == [b"router"]
