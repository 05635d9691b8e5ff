"""The Lua scripts on their own, against a real Redis: what they must never write."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from notifier.models import Message
from notifier.redis import keys, lua
from notifier.redis.lua import Scripts
from tests.helpers import publish

PARTNER = "ptn_gone"


def message(n: int) -> bytes:
    return msgspec.json.encode(
        Message(id=f"m{n}", type="t", timestamp="2026-01-01T00:00:00Z", data=msgspec.Raw(b"{}"))
    )


async def read_by_router(redis: Redis, count: int) -> list[str]:
    """Publish `count` events and read them as router "r1": pending, ready to route."""
    await redis.xgroup_create("notifier:events", keys.ROUTER_GROUP, id="0", mkstream=True)
    ids = [await publish(redis, "t", "{}") for _ in range(count)]
    await redis.xreadgroup(keys.ROUTER_GROUP, "r1", {"notifier:events": ">"})
    return ids


def route_batch(
    ids: list[str], partners: list[tuple[str, bool]], retention_ms: int = 0
) -> lua.Call[list[int]]:
    """A route_batch call of entries `ids`, entry n as message m<n> to partners[n] alone."""
    return lua.route_batch(
        ingress="notifier:events",
        group=keys.ROUTER_GROUP,
        now_ms=1000,
        entries=[
            lua.Routing(
                entry_id=entry,
                message=message(n),
                message_id=f"m{n}",
                dedupe_ttl=0,
                partners=[partner],
            )
            for n, (entry, partner) in enumerate(zip(ids, partners, strict=True))
        ],
        retention_ms=retention_ms,
    )


async def test_scripts_write_nothing_for_a_partner_whose_stream_is_gone(redis: Redis) -> None:
    """After FLUSHALL (or a partner's removal), calls still on their way must not bring back
    keys of a partner that no longer exists."""
    scripts = Scripts(redis)
    took = await scripts.run(
        lua.take(
            partner_id=PARTNER,
            consumer="c",
            now_ms=1000,
            want=10,
            limit=5,
            window_ms=1000,
            ordered=False,
            lease_until=61_000,
            visible_ms=60_000,
            token="t",
        )
    )
    assert took.blocked_until == -1 and took.messages == []
    failing = await scripts.run(
        lua.settle(
            partner_id=PARTNER,
            now_ms=1000,
            delivered=["1-0"],
            retries=[lua.Retry("2-0", 5000, b'{"a":1}')],
            dead=[lua.Dead("3-0", "gave up", message(3), b'{"a":1}', "now")],
            sent=[("t:1", 1000)],
            records=[b'{"a":1}', b'{"a":2}'],
        )
    )
    assert failing == lua.Settled(0, False)
    await redis.zadd(keys.READY, {PARTNER: 0})
    await redis.zadd(keys.LEASES, {PARTNER: 61_000})
    assert (
        await scripts.run(
            lua.release(
                partner_id=PARTNER, now_ms=1000, blocked_until=0, active=True, held_until=61_000
            )
        )
        == -1
    )
    assert await redis.keys("*") == []


async def test_settling_a_batch_twice_changes_nothing_more(redis: Redis) -> None:
    """A process that lost Redis settles its batch again when Redis returns; the first settle
    may have run. The message is dead-lettered once and a retry is not brought back."""
    scripts = Scripts(redis)
    stream = keys.stream("ptn_a")
    await redis.xgroup_create(stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(3):
        await redis.xadd(stream, {"m": message(n)}, id=f"{n + 1}-0")
    took = await scripts.run(
        lua.take(
            partner_id="ptn_a",
            consumer="c",
            now_ms=1000,
            want=10,
            limit=0,
            window_ms=0,
            ordered=False,
            lease_until=61_000,
            visible_ms=60_000,
            token="t",
        )
    )
    assert [t.entry_id for t in took.messages] == ["1-0", "2-0", "3-0"]
    batch = lua.settle(
        partner_id="ptn_a",
        now_ms=2000,
        delivered=["1-0"],
        retries=[lua.Retry("2-0", 9000, b'{"n":2}')],
        dead=[lua.Dead("3-0", "gave up", message(2), b'{"n":3}', "now")],
        sent=[],
        records=[b'{"n":1}', b'{"n":2}', b'{"n":3}'],
    )
    await scripts.run(batch)
    # the retry is taken and settled as delivered before the batch is settled again
    await redis.zadd(keys.due("ptn_a"), {"2-0": 0})
    await scripts.run(
        lua.take(
            partner_id="ptn_a",
            consumer="c",
            now_ms=3000,
            want=10,
            limit=0,
            window_ms=0,
            ordered=False,
            lease_until=63_000,
            visible_ms=60_000,
            token="u",
        )
    )
    await scripts.run(
        lua.settle(
            partner_id="ptn_a",
            now_ms=3000,
            delivered=["2-0"],
            retries=[],
            dead=[],
            sent=[],
            records=[b'{"n":2}'],
        )
    )
    await scripts.run(batch)
    assert await redis.xlen(keys.DEAD) == 1
    assert await redis.xlen(stream) == 0
    assert await redis.zcard(keys.due("ptn_a")) == 0
    assert await redis.hlen(keys.history("ptn_a")) == 0


async def test_an_unlimited_partner_keeps_no_window_log(redis: Redis) -> None:
    scripts = Scripts(redis)
    stream = keys.stream("ptn_a")
    await redis.xgroup_create(stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(50):
        await redis.xadd(stream, {"m": message(n)})
    took = await scripts.run(
        lua.take(
            partner_id="ptn_a",
            consumer="c",
            now_ms=1000,
            want=50,
            limit=0,
            window_ms=0,
            ordered=False,
            lease_until=61_000,
            visible_ms=60_000,
            token="t",
        )
    )
    assert len(took.messages) == 50
    assert not await redis.exists(keys.window("ptn_a"))


async def test_a_late_release_leaves_another_holders_lease_alone(redis: Redis) -> None:
    """A process whose lease ran out while Redis was away releases late; the partner is now
    another process's, whose lease and score must stand."""
    scripts = Scripts(redis)
    stream = keys.stream("ptn_a")
    await redis.xadd(stream, {"m": message(1)})
    await redis.zadd(keys.READY, {"ptn_a": 200_000})
    await redis.zadd(keys.LEASES, {"ptn_a": 200_000})  # the new holder's lease
    reply = await scripts.run(
        lua.release(
            partner_id="ptn_a", now_ms=100_000, blocked_until=0, active=True, held_until=61_000
        )
    )
    assert reply == -2
    assert await redis.zscore(keys.LEASES, "ptn_a") == 200_000
    assert await redis.zscore(keys.READY, "ptn_a") == 200_000


async def test_a_split_fan_out_resumed_by_another_router_appends_each_copy_once(
    redis: Redis,
) -> None:
    scripts = Scripts(redis)
    await redis.xgroup_create("notifier:events", keys.ROUTER_GROUP, id="0", mkstream=True)
    entry = await publish(redis, "t", "{}")
    await redis.xreadgroup(keys.ROUTER_GROUP, "r1", {"notifier:events": ">"})
    partners = [(f"ptn_{n}", True) for n in range(6)]

    def chunks() -> list[lua.Call[int]]:
        return [
            lua.route(
                ingress="notifier:events",
                group=keys.ROUTER_GROUP,
                entry_id=entry,
                now_ms=1000,
                message=message(1),
                partners=partners[i : i + 2],
                event_id=f"msg_{entry}",
                chunk=i // 2,
                last=i == 4,
            )
            for i in range(0, 6, 2)
        ]

    first_router = chunks()
    assert await scripts.run(first_router[0]) == 2  # then it stops
    assert await redis.get(keys.fanout(entry)) == b"1"
    replies = [await scripts.run(call) for call in chunks()]  # the next router, from 0
    assert replies == [0, 2, 2]
    for pid, _ in partners:
        assert await redis.xlen(keys.stream(pid)) == 1
    assert await redis.xpending("notifier:events", keys.ROUTER_GROUP) == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    assert not await redis.exists(keys.fanout(entry))
    assert [await scripts.run(call) for call in chunks()] == [-1, -1, -1]


async def test_a_batch_routes_only_the_entries_no_other_router_has_routed(redis: Redis) -> None:
    """Another router may have claimed and routed some entries of a batch (this one stalled
    past NOTIFIER_CLAIM_IDLE): those are answered -1 and written nowhere, the rest routed."""
    scripts = Scripts(redis)
    ids = await read_by_router(redis, 3)
    await redis.xack("notifier:events", keys.ROUTER_GROUP, ids[1])  # routed by "r2"

    def batch() -> lua.Call[list[int]]:
        return route_batch(ids, [(f"ptn_{n}", True) for n in range(3)], retention_ms=60_000)

    assert await scripts.run(batch()) == [1, -1, 1]
    assert [await redis.xlen(keys.stream(f"ptn_{n}")) for n in range(3)] == [1, 0, 1]
    assert not await redis.hexists(keys.message_index("m1"), "m1")
    assert (await redis.xpending("notifier:events", keys.ROUTER_GROUP))["pending"] == 0
    assert (
        await redis.xlen("notifier:events") == 1
    )  # the routed ones are deleted; r2 deletes its own
    assert await scripts.run(batch()) == [-1, -1, -1]  # run again: nothing twice
    assert [await redis.xlen(keys.stream(f"ptn_{n}")) for n in range(3)] == [1, 0, 1]


async def test_a_batch_wakes_each_partner_by_the_wake_rule_once(redis: Redis) -> None:
    """A routed batch wakes its partners together (lua/wake_partners.lua): a leased partner
    keeps its score and gets no token (its holder looks again), one due already gets no
    token either, an idle one is due now with one token however many messages it got, and a
    disabled one is not scheduled."""
    scripts = Scripts(redis)
    ids = await read_by_router(redis, 5)
    await redis.zadd(keys.LEASES, {"ptn_leased": 90_000})
    await redis.zadd(keys.READY, {"ptn_leased": 90_000, "ptn_due": 500})
    targets = ["ptn_idle", "ptn_leased", "ptn_due", "ptn_idle", "ptn_off"]
    call = route_batch(ids, [(target, target != "ptn_off") for target in targets])
    assert await scripts.run(call) == [1, 1, 1, 1, 1]
    assert await redis.zrange(keys.READY, 0, -1, withscores=True) == [
        (b"ptn_due", 500.0),
        (b"ptn_idle", 1000.0),
        (b"ptn_leased", 90_000.0),
    ]
    assert await redis.lrange(keys.WAKE, 0, -1) == [b"ptn_idle"]
    assert await redis.xlen(keys.stream("ptn_idle")) == 2
    assert await redis.xlen(keys.stream("ptn_off")) == 1
