"""What Redis keeps stays bounded and what producers may send is held to the rules: the dead
letters and the operational events are capped (about DEAD_KEPT and OPS_KEPT entries), a
producer id's dedupe marker expires after DEDUPE_TTL and the id may then be delivered again,
and an event of notifier's own `notifier.*` types from a producer is dead-lettered, never
delivered."""

from __future__ import annotations

from typing import cast

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config, ops
from notifier.config import Settings
from notifier.redis import keys
from tests.helpers import (
    KS,
    EndpointFactory,
    StreamEntry,
    cli,
    entries,
    eventually,
    idle,
    publish,
    register,
)
from tests.helpers import running as running_notifier

pytestmark = pytest.mark.slow

#: Entries of one node of a stream (stream-node-max-entries): XADD MAXLEN ~ trims whole nodes,
#: so a capped stream may hold up to this many beyond its cap.
NODE = 100


async def fill(redis: Redis, stream: str, count: int) -> None:
    """`count` old entries, so that the next XADD of notifier's is past the cap."""
    for start in range(0, count, 10_000):
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(start, min(count, start + 10_000)):
                pipe.xadd(stream, {"reason": "old", "type": "old"})
            await pipe.execute()


async def newest(redis: Redis, stream: str, count: int) -> list[StreamEntry]:
    return cast(list[StreamEntry], await redis.xrevrange(stream, count=count))


async def entries_from(redis: Redis, stream: str, count: int) -> list[StreamEntry]:
    """The oldest `count` entries."""
    return cast(list[StreamEntry], await redis.xrange(stream, count=count))


async def failing(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=500)


async def test_dead_letters_and_operational_events_stay_capped(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """Both streams filled to their caps first: a malformed event, a message that failed its
    schedule and their operational events are appended, and the oldest trimmed."""
    await fill(redis, keys.DEAD, keys.DEAD_KEPT + NODE)
    await fill(redis, keys.OPS, keys.OPS_KEPT + NODE)
    first = {
        stream: (await entries_from(redis, stream, 1))[0][0] for stream in (keys.DEAD, keys.OPS)
    }
    # routed already, as far as the routers' lane of notifier:ops goes
    await redis.xgroup_create(keys.OPS, keys.ROUTER_GROUP, id="$")
    endpoint = await endpoint_factory(failing)
    pid, _ = await register(redis, settings, "down", endpoint.url, ["order.created"])
    async with running_notifier(settings):
        await redis.xadd("notifier:events", {"type": "order.created", "data": "not json"})
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(len(settings.retry_schedule) + 1)
        await idle(redis)

        async def both_told() -> bool:
            told = [fields[b"type"] for _, fields in await newest(redis, keys.OPS, 10)]
            return told.count(ops.DEAD_LETTERED.encode()) == 2

        await eventually(both_told, 20, "two dead letters told on notifier:ops")
    for stream, cap in ((keys.DEAD, keys.DEAD_KEPT), (keys.OPS, keys.OPS_KEPT)):
        assert cap <= await redis.xlen(stream) <= cap + NODE, stream
        [(oldest, _)] = await entries_from(redis, stream, 1)
        assert oldest > first[stream], f"{stream} kept its oldest entries"
    letters = [fields for _, fields in await newest(redis, keys.DEAD, 2)]
    assert {f.get(b"partner", b"").decode() for f in letters} == {pid, ""}


@pytest.mark.parametrize("retention", ["0", "7d"])
async def test_a_producer_id_is_delivered_again_once_its_dedupe_expires(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, retention: str
) -> None:
    """Within its dedupe an id is delivered once; what remembers it (the marker while the
    message index is off, else the index) expires after DEDUPE_TTL or the retention, and
    then the id is a new message."""
    settings = config.load({**env, "NOTIFIER_MESSAGE_RETENTION": retention})
    endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["order.created"])
    shard = KS.shards[0]
    retention_s = settings.message_retention
    async with running_notifier(settings):
        await publish(redis, "order.created", {"n": 1}, event_id="ord-1")
        await endpoint.wait_for(1)
        await publish(redis, "order.created", {"n": 2}, event_id="ord-1")
        await idle(redis)
        assert [b["data"]["n"] for b in endpoint.bodies()] == [1]
        if retention == "0":
            remembers = [shard.seen("ord-1")]
            assert keys.DEDUPE_TTL - 60 < await redis.ttl(remembers[0]) <= keys.DEDUPE_TTL
        else:
            # the generation of producer ids that maps it: kept for the retention of its
            # last message, and a grace for the janitor to unlink it first; and the hash of
            # its tenth of a second, which holds the message itself for the retention (a new
            # message under the same id may be routed within that tenth here, not in use)
            found = await redis.keys(f"{shard.home}messages:*") + await redis.keys(
                f"{shard.home}ids:*"
            )
            remembers = [k.decode() if isinstance(k, bytes) else k for k in found]
            assert remembers[-1].startswith(f"{shard.home}ids:") and len(remembers) >= 2
            least = retention_s + keys.IDS_GRACE_MS // 1000 - 60
            most = least + 60 + keys.ids_generation_ms(int(retention_s * 1000)) // 1000
            assert least < await redis.ttl(remembers[-1]) <= most
        for key in remembers:
            await redis.pexpire(key, 1)  # as when its time has come

        async def forgotten() -> bool:
            return not await redis.exists(*remembers)

        await eventually(forgotten, 5, "the dedupe to expire")
        await publish(redis, "order.created", {"n": 3}, event_id="ord-1")
        await endpoint.wait_for(2)
        await idle(redis)
    assert [b["data"]["n"] for b in endpoint.bodies()] == [1, 3]


async def test_producers_may_not_publish_notifiers_own_types(
    redis: Redis, env: dict[str, str], settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """A `notifier.*` event XADDed by a producer is dead-lettered with the reason, and the
    partner subscribed to that type by name never receives it; `notifier publish` refuses it
    before it is sent."""
    watcher = await endpoint_factory()
    await register(redis, settings, "watcher", watcher.url, [ops.PARTNER_DISABLED])
    forged = '{"partner": "ptn_x", "name": "x", "reason": "forged"}'
    refused = cli(env, "publish", ops.PARTNER_DISABLED, forged)
    assert refused.returncode == 1
    assert "notifier.* types are notifier's own" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    async with running_notifier(settings):
        await redis.xadd("notifier:events", {"type": ops.PARTNER_DISABLED, "data": forged})

        async def dead_lettered() -> bool:
            return bool(await redis.xlen(keys.DEAD))

        await eventually(dead_lettered, 20, "the forged event to be dead-lettered")
        await idle(redis)
    [(_, letter)] = await entries(redis, keys.DEAD)
    assert b"notifier.* types are notifier's own" in letter[b"reason"]
    assert watcher.received == []
    assert await redis.xlen(KS.partner("ptn_x").stream) == 0
