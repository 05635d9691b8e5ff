"""Hostile ingress entries: whatever a producer XADDs, routing goes on and nothing is dropped.

Each entry here once stopped the router (and with `notifier run`, the whole process), and a
restarted router claimed the same entry and stopped again.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from notifier import config, events
from notifier.config import Settings
from notifier.dead_letters import DeadLetters
from notifier.engine.router import MAX_ROUTE_TRIES, Router
from notifier.redis import keys
from tests.helpers import (
    KS,
    Endpoint,
    EndpointFactory,
    entries,
    eventually,
    idle,
    publish,
    register,
    running,
)


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


POISON: list[tuple[dict[FieldT, EncodableT], str]] = [
    ({b"type": b"order.created", b"data": b'{"a": "\xff"}'}, "not UTF-8"),
    ({b"type": b"order.created", b"data": deep(1000)}, "nests too deeply"),
    ({b"type": b"order.\xff", b"data": b"{}"}, "type is not UTF-8"),
    ({b"type": b"order.created\n", b"data": b"{}"}, "may only contain"),
    ({b"type": b"x" * 300, b"data": b"{}"}, "300 characters long, at most 200"),
    ({b"type": b"order.created", b"data": b"{}", b"id": b"\xfe\xff"}, "id is not UTF-8"),
    ({b"type": b"order.created", b"data": b"{}", b"id": b"a\nb"}, "printable"),
    ({b"type": b"", b"data": b"{}"}, "type is empty"),
]


async def dead_reasons(redis: Redis) -> list[str]:
    return [fields[b"reason"].decode() for _, fields in await entries(redis, keys.DEAD)]


async def test_poison_events_are_dead_lettered_and_the_next_event_is_delivered(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partner = await endpoint_factory()
    await register(redis, settings, "p", partner.url, ["*"])
    async with running(settings):
        for fields, _ in POISON:
            await redis.xadd("notifier:events", fields)
        await publish(redis, "order.created", {"order_id": 1})
        await partner.wait_for(1)
        await idle(redis)
    assert [body["data"] for body in partner.bodies()] == [{"order_id": 1}]
    reasons = await dead_reasons(redis)
    assert len(reasons) == len(POISON)
    for reason, (_, expected) in zip(reasons, POISON, strict=True):
        assert expected in reason
    # as the API and CLI show them: each with when it was dead-lettered
    letters = (await DeadLetters(redis, settings).page()).data
    assert len(letters) == len(POISON)
    assert all(d.at.startswith("20") and d.at.endswith("Z") for d in letters), letters


async def test_an_entry_handed_out_too_often_is_dead_lettered_whatever_the_cause(
    redis: Redis, settings: Settings, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    """A router killed by an entry (say, by the OOM killer) leaves it pending; each claim by the
    next router bumps its delivery count, and at MAX_ROUTE_TRIES it is set aside."""
    # The router claims what the dead ones left after its NOTIFIER_CLAIM_IDLE: short, as that
    # expiry is what this test is about (the setting must outlast a request, hence its
    # timeout). Delivery keeps the suite's 60 s, longer than every wait below.
    claim_idle = 0.2
    router_settings = config.load(
        {
            **env,
            "NOTIFIER_REQUEST_TIMEOUT": "100ms",
            "NOTIFIER_CLAIM_IDLE": f"{claim_idle * 1000:g}ms",
            "NOTIFIER_CONSUMER": "router-live",
        }
    )
    partner = await endpoint_factory()
    await register(redis, settings, "p", partner.url, ["*"])
    await Router(redis, settings).ensure_group()
    killer = await publish(redis, "order.created", {"n": "killer"})
    # Routers that "died" on it: it was handed out MAX_ROUTE_TRIES times, never acknowledged.
    await redis.xreadgroup(keys.ROUTER_GROUP, "router-1", {"notifier:events": ">"}, count=1)
    for n in range(2, MAX_ROUTE_TRIES + 1):
        await redis.xclaim("notifier:events", keys.ROUTER_GROUP, f"router-{n}", 0, [killer])
    survivor = await publish(redis, "order.created", {"n": "ok"})
    await redis.xreadgroup(keys.ROUTER_GROUP, "router-9", {"notifier:events": ">"}, count=1)

    async def left_idle() -> bool:
        rows = await redis.xpending_range(
            "notifier:events", keys.ROUTER_GROUP, "-", "+", 10, idle=int(claim_idle * 1000)
        )
        return len(rows) == 2

    # both are claimed at the router's first look (it looks again only between blocking reads)
    await eventually(left_idle, 5, "what the dead routers left to outlast the claim idle")
    started = time.monotonic()
    async with running(router_settings, deliver=False), running(settings, route=False):
        await partner.wait_for(1, timeout=10)
        await eventually(lambda: _count_dead(redis, 1), 10, "the killer to be dead-lettered")
        await idle(redis)
    recovered = partner.received[0].at - started
    print(f"the survivor delivered {recovered:.1f}s after the router started")
    assert recovered < 5  # a router and a delivery loop starting on a busy machine
    assert [body["data"] for body in partner.bodies()] == [{"n": "ok"}]
    dead = await entries(redis, keys.DEAD)
    assert dead[0][1][b"entry_id"].decode() == killer
    assert f"routing failed {MAX_ROUTE_TRIES + 1} times" in dead[0][1][b"reason"].decode()
    assert survivor != killer


async def _leased(redis: Redis, partner_id: str) -> bool:
    return await redis.zscore(KS.shards[0].leases, partner_id) is not None


async def _count_dead(redis: Redis, count: int) -> bool:
    return int(await redis.xlen(keys.DEAD)) >= count


async def test_a_partner_stream_that_refuses_the_message_dead_letters_only_that_copy(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """A Lua script keeps what it wrote before failing, and the entry is acknowledged first:
    a broken partner key must cost that partner's copy (dead-lettered, replayable), not the
    other partners' copies or the entry."""
    good, broken = await endpoint_factory(), await endpoint_factory()
    await register(redis, settings, "good", good.url, ["*"])
    broken_id, _ = await register(redis, settings, "broken", broken.url, ["*"])
    await redis.set(KS.partner(broken_id).stream, "not a stream")
    await redis.zadd(KS.shards[0].ready, {broken_id: 0})  # due: as if it had messages
    async with running(settings):
        # the broken partner is served first, and fails at every step, even giving it back:
        # that must not hold up the delivery process
        await eventually(lambda: _leased(redis, broken_id), 10, "the broken partner leased")
        await publish(redis, "order.created", {"n": 1})
        await good.wait_for(1)
        await eventually(lambda: _count_dead(redis, 1), 10, "the broken copy to be dead")
    ((_, fields),) = await entries(redis, keys.DEAD)
    assert fields[b"partner"].decode() == broken_id
    assert b"WRONGTYPE" in fields[b"reason"]
    assert json.loads(fields[b"message"])["data"] == {"n": 1}
    assert broken.received == []


async def test_an_unreadable_partner_record_does_not_stop_routing(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    partner = await endpoint_factory()
    await register(redis, settings, "p", partner.url, ["*"])
    await redis.hset(KS.shards[0].partners, "ptn_corrupt", b"{not json")
    await redis.xadd(KS.shards[0].changes, {"id": "ptn_corrupt"})
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await partner.wait_for(1)
        await idle(redis)
    assert partner.bodies()[0]["data"] == {"n": 1}


# The same rules everywhere: what the router dead-letters, the API refuses as a subscription.


# Property: whatever bytes arrive in whatever fields, parse answers a Message or a reason.

_fields = st.dictionaries(
    st.sampled_from([b"type", b"data", b"id", b"other"]) | st.binary(max_size=8),
    st.binary(max_size=300) | st.sampled_from([deep(400), deep(5000), b"{}", b'{"a":1}']),
    max_size=5,
)


_entries = st.lists(_fields, min_size=1, max_size=8)


@pytest.fixture
async def shared_endpoint(endpoint_factory: EndpointFactory) -> Endpoint:
    """One endpoint for every example hypothesis runs in a test."""
    endpoint: Endpoint = await endpoint_factory()
    return endpoint


@pytest.mark.slow
@given(_entries)
@hsettings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
async def test_every_entry_ends_delivered_or_dead_lettered(
    redis: Redis, settings: Settings, shared_endpoint: Endpoint, batch: list[dict[bytes, bytes]]
) -> None:
    """Arbitrary entries through a live router: each one is routed or dead-lettered with a
    reason, the router keeps going, and the good event after them is delivered."""
    await redis.flushall()
    shared_endpoint.received.clear()
    await register(redis, settings, "p", shared_endpoint.url, ["*"])
    async with running(settings):
        expected = 0
        for fields in batch:
            if not fields:
                continue  # XADD needs a field
            # redis-py asks for a dict[FieldT, EncodableT], which a dict[bytes, bytes] is not
            # (dict is invariant); a Mapping would do
            await redis.xadd("notifier:events", fields)  # type: ignore[arg-type]
            expected += not isinstance(events.parse("0-0", fields, settings.max_event_bytes), str)
        await publish(redis, "order.created", {"sentinel": True})
        await shared_endpoint.wait_for(expected + 1)
        await idle(redis)
    sent = sum(1 for fields in batch if fields)
    assert len(shared_endpoint.received) == expected + 1
    assert await redis.xlen(keys.DEAD) == sent - expected
    assert all(await dead_reasons(redis))
    assert shared_endpoint.bodies()[-1]["data"] == {"sentinel": True}
