"""The index of subscriptions routes exactly as a scan of every partner would, and follows
partner changes one partner at a time."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from notifier.config import Settings
from notifier.engine.router import Router
from notifier.models import PartnerIn, PartnerPatch
from notifier.store import Store
from tests.helpers import KS, EndpointFactory, register


async def test_a_running_router_follows_changes_one_partner_at_a_time(
    redis: Redis, settings: Settings, monkeypatch: Any
) -> None:
    a, _ = await register(redis, settings, "a", "https://a.example", ["order.created"])
    router = Router(redis, settings)
    await router.refresh_partners()
    loads = []
    original = router.feed._load

    async def counted(home: Any) -> None:
        loads.append(1)
        await original(home)

    monkeypatch.setattr(router.feed, "_load", counted)
    store = Store(redis, settings)
    b, _ = await register(redis, settings, "b", "https://b.example", ["*"])
    await store.update(a, PartnerPatch(events=["order.paid"]))
    index = await router.refresh_partners()
    assert [p.id for p in index.targets("order.created").partners] == [b]
    assert sorted(p.id for p in index.targets("order.paid").partners) == sorted([a, b])
    await store.remove(b)
    assert [p.id for p in (await router.refresh_partners()).targets("order.paid").partners] == [a]
    assert loads == []  # no full reload for any of these

    # Redis lost its data: the index must not route to partners that no longer exist.
    await redis.flushall()
    c, _ = await register(redis, settings, "c", "https://c.example", ["order.paid"])
    assert [p.id for p in (await router.refresh_partners()).targets("order.paid").partners] == [c]
    assert loads == [1]

    # The change log was trimmed past the router's cursor: everything is read again.
    router.feed._cursors[KS.shards[0].changes] = b"1-0"
    await redis.xadd(KS.shards[0].changes, {"id": c})
    await router.refresh_partners()
    assert loads == [1, 1]


async def test_a_type_with_1000_subscribers_is_routed_in_calls_of_a_chunk(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """Each partner gets the event once, and no route call carries more than FANOUT_CHUNK
    partners, so that no call holds Redis for long. What is checked is what Redis was sent
    (every command is in the slow log while the threshold is 0), not how long it took: a
    busy machine makes any call slow."""
    from notifier.engine.fanout import FANOUT_CHUNK
    from tests.helpers import idle, publish, running

    endpoint = await endpoint_factory()
    store = Store(redis, settings)
    for n in range(1000):
        await store.create(
            PartnerIn(name=f"p{n}", url=f"{endpoint.url}/{n}", events=["order.created"])
        )
    await redis.config_set("slowlog-max-len", 100_000)
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()
    try:
        async with running(settings):
            await publish(redis, "order.created", {"n": 1}, event_id="big-1")
            await endpoint.wait_for(1000, timeout=30)
            await idle(redis, 20)
        logged = await redis.slowlog_get(100_000)
    finally:
        await redis.config_set("slowlog-log-slower-than", 10000)
        await redis.config_set("slowlog-max-len", 128)
    # A route call's keys: the shard's ready, leases and dead, then per message its marker
    # and index hash, then per partner its stream and message list.
    route_keys = [
        int(entry["command"].split()[2])
        for entry in logged
        if entry["command"].startswith(b"EVALSHA")
        and entry["command"].split()[5].endswith(b":dead")
    ]
    assert len(route_keys) >= -(-1000 // FANOUT_CHUNK), route_keys
    assert max(route_keys) <= 3 + 2 + 2 * FANOUT_CHUNK, route_keys
    paths = sorted(int(r.path.rsplit("/", 1)[1]) for r in endpoint.received)
    assert paths == list(range(1000))
    assert len({r.headers["webhook-id"] for r in endpoint.received}) == 1
    assert not await redis.keys("notifier:fanout:*")
    assert FANOUT_CHUNK < 1000
