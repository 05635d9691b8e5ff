"""The pacing parts of `take.lua` and `settle.lua` (`pace.lua`) on their own, against a real
Redis, with the key maps of one Redis and of a three-shard Cluster: how a throttle starts and
shrinks a pace, how successes grow it back until it ends, what a take of a paced partner may
take, a Retry-After's pause, and the attempts pacing absorbed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from notifier.redis import keys, lua
from notifier.redis.keys import Keyspace, PartnerKeys, Shard
from notifier.redis.lua import Scripts
from tests.integration.test_lua import message
from tests.integration.test_lua import take as lua_take

PARTNER = "ptn_paced"
NOW = 1_000_000
#: A partner without a rate limit of its own takes a pace over this window (1 s).
WINDOW = 1000


@pytest.fixture(params=["one redis", "cluster"])
def ks(request: pytest.FixtureRequest) -> Keyspace:
    return Keyspace() if request.param == "one redis" else Keyspace(3, cluster=True)


def told(**given: Any) -> lua.Told:
    fields: dict[str, Any] = {
        "max_in_flight": 10,
        "ceiling": 0.0,
        "throttles": 0,
        "latest_sent_ms": 0,
        "pause_until_ms": 0,
        "accepted": 0,
        "seen_ok_ms": 0,
        "why": "429",
    }
    return lua.Told(**{**fields, **given})


def take(shard: Shard, now: int, *, limit: int = 0, pacing: bool = True) -> lua.Call[Any]:
    return lua_take(shard, PARTNER, now, limit, window_ms=WINDOW, leased=False, pacing=pacing)


def settle(shard: Shard, now: int, pace: lua.Told, **outcomes: Any) -> lua.Call[lua.Settled]:
    return lua.settle(
        shard=shard,
        partner=shard.partner(PARTNER),
        now_ms=now,
        delivered=outcomes.get("delivered", []),
        retries=outcomes.get("retries", []),
        dead=[],
        moved=[],
        window_ms=0,
        records=[b"{}"] * (len(outcomes.get("delivered", [])) + len(outcomes.get("retries", []))),
        told=pace,
    )


async def backlog(redis: Redis, partner: PartnerKeys, count: int) -> None:
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(count):
        await redis.xadd(partner.stream, {"m": message(n)}, id=f"{n + 1}-0")


async def pace_of(redis: Redis, partner: PartnerKeys) -> dict[str, float]:
    """The pace's numbers by field name."""
    found: dict[bytes, bytes] = await redis.hgetall(partner.pace)  # type: ignore[assignment]
    return {k.decode(): float(v) for k, v in found.items() if k != b"y"}


async def test_a_throttle_starts_a_pace_below_what_the_partner_accepted(
    redis: Redis, ks: Keyspace
) -> None:
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 20)
    assert len((await scripts.run(take(shard, NOW))).messages) == 20  # not paced: all of them
    start = told(throttles=1, latest_sent_ms=NOW, accepted=40, seen_ok_ms=NOW - 5)
    reply = await scripts.run(settle(shard, NOW + 10, start, retries=[lua.Retry("1-0", 0, b"{}")]))
    assert (reply.pace, reply.paced_rate) == ("started", 32.0)  # 0.8 of what it accepted
    # 19 still out and the one settled were in use: 0.8 of max_in_flight, which is less
    assert reply.paced == 8
    pace = await pace_of(redis, partner)
    assert (pace["r"], pace["s"], pace["d"], pace["o"]) == (32.0, NOW + 10, NOW + 10, NOW - 5)
    assert await redis.hget(partner.pace, "y") == b"429"
    assert 0 < await redis.pttl(partner.pace) <= 60_000


async def test_a_new_pace_of_a_partner_that_accepted_nothing_probes_up_from_little(
    redis: Redis, ks: Keyspace
) -> None:
    """With nothing accepted, a pace starts at a request a second per request in use (up to
    max_in_flight), and until its first shrink its step doubles every second."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 30)
    await scripts.run(take(shard, NOW, pacing=False))  # 30 out
    start = await scripts.run(settle(shard, NOW, told(throttles=3, latest_sent_ms=NOW)))
    assert (start.pace, start.paced_rate, start.paced) == ("started", 8.0, 8)
    for n in range(20):
        await redis.xadd(partner.stream, {"m": message(n)}, id=f"{n + 100}-0")
    await redis.delete(partner.inflight)  # (as if the 30 were answered)
    took = await scripts.run(take(shard, NOW + 1))
    assert len(took.messages) == 1  # 8 a second: one a slice
    rates = []
    for at in (1000, 2000, 3000):
        grown = await scripts.run(settle(shard, NOW + at, told(), delivered=["99-1"]))
        rates.append(grown.paced_rate)
    assert rates == [9.0, 11.0, 15.0]  # a twentieth of 10 a second, doubled every second


async def test_a_paced_take_is_held_to_the_pace(redis: Redis, ks: Keyspace) -> None:
    """The pace's concurrency counts every request still out, its rate becomes the window's
    limit (spread over ten slices), and a rate limit of the partner's own still holds."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 100)
    await redis.hset(partner.pace, mapping={"r": 30, "c": 5, "o": NOW - 1})
    first = await scripts.run(take(shard, NOW))
    assert (len(first.messages), first.paced, first.last_ok_ms) == (3, 5, NOW - 1)  # 30/10
    # two slices later: three more, which fill the five the pace lets out
    second = await scripts.run(take(shard, NOW + 250))
    assert len(second.messages) == 2
    held = await scripts.run(take(shard, NOW + 500))
    assert held.messages == [] and held.blocked_until == NOW + 600 and held.paced == 5
    # a rate limit of its own below the pace is the one that holds (the five sent are
    # settled: a request still out counts against the window until it is)
    await redis.hset(partner.pace, "c", 50)
    await redis.delete(partner.inflight)
    limited = await scripts.run(take(shard, NOW + 5000, limit=2))
    assert len(limited.messages) == 1  # ceil(2 / 10) a slice
    # and with pacing off, the pace is not read at all, and the reply says nothing of it
    off = await scripts.run(take(shard, NOW + 10_000, pacing=False))
    assert len(off.messages) == 50 and off.paced is None


async def test_requests_held_open_shrink_the_rate_not_the_concurrency(
    redis: Redis, ks: Keyspace
) -> None:
    """Held requests (open far longer than the partner's answers) say the rate is too high;
    what is in use then is mostly the held requests, so the concurrency is left alone. Their
    timeouts, later, are old news."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 1)
    start = told(throttles=1, latest_sent_ms=NOW, accepted=100)
    assert (await scripts.run(settle(shard, NOW, start))).paced_rate == 80.0
    await redis.hset(partner.pace, "c", 10)
    held = told(throttles=2, latest_sent_ms=NOW + 1000, why="held")
    shrunk = await scripts.run(settle(shard, NOW + 1300, held))
    assert (shrunk.pace, shrunk.paced_rate, shrunk.paced) == ("shrunk", 64.0, 10)
    assert await redis.hget(partner.pace, "y") == b"held"
    timeouts = told(throttles=2, latest_sent_ms=NOW + 1000, why="timeout")
    assert (await scripts.run(settle(shard, NOW + 3000, timeouts))).pace == "none"
    assert (await pace_of(redis, partner))["r"] == 64.0


async def test_old_news_does_not_shrink_the_pace_twice(redis: Redis, ks: Keyspace) -> None:
    """Throttles of requests sent before the last shrink, or within a second after it (the
    partner may still count what came before), say nothing new; a later one shrinks it again."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 1)
    start = told(throttles=1, latest_sent_ms=NOW, accepted=100)
    assert (await scripts.run(settle(shard, NOW, start))).paced_rate == 80.0
    for sent in (NOW - 1, NOW + 999):
        stale = await scripts.run(settle(shard, NOW + 1200, told(throttles=3, latest_sent_ms=sent)))
        assert (stale.pace, stale.paced_rate) == ("none", 80.0)
    fresh = told(throttles=1, latest_sent_ms=NOW + 1000, accepted=40, why="timeout")
    again = await scripts.run(settle(shard, NOW + 1200, fresh))
    assert (again.pace, again.paced_rate, again.paced) == ("shrunk", 64.0, 1)  # from 80
    assert await redis.hget(partner.pace, "y") == b"timeout"
    assert (await pace_of(redis, partner))["m"] == 80.0  # the rate it shrank from


async def test_successes_grow_the_pace_back_until_it_ends(redis: Redis, ks: Keyspace) -> None:
    """Growth: a twentieth of the rate it shrank from per second up to that rate, then a step
    doubled for each whole second past it (a new pace probes so from its start); a request of
    concurrency a second, doubled each second without a throttle; at the partner's own
    limits the pace is gone."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 1)
    limits = {"ceiling": 50.0, "max_in_flight": 4}
    start = told(throttles=1, latest_sent_ms=NOW, accepted=40, **limits)
    assert (await scripts.run(settle(shard, NOW, start))).paced_rate == 32.0
    ok = told(**limits)
    half = await scripts.run(settle(shard, NOW + 500, ok, delivered=["99-1"]))
    assert (half.pace, half.paced_rate) == ("grown", 33.0)  # 40 * 0.05 * 0.5 s
    later = await scripts.run(settle(shard, NOW + 1500, ok, delivered=["99-2"]))
    assert later.paced_rate == 37.0  # a whole second more: a new pace's step doubles
    pace = await pace_of(redis, partner)
    assert pace["c"] == 1 + 0.5 + 2 and pace["o"] == NOW + 1500
    shrink = told(throttles=1, latest_sent_ms=NOW + 1500, **limits)
    assert (await scripts.run(settle(shard, NOW + 1600, shrink))).paced_rate == 29.6  # 37 * 0.8
    now, rates = NOW + 1600, []
    while (reply := await scripts.run(settle(shard, now, ok, delivered=["99-3"]))).pace != "ended":
        assert reply.paced_rate <= 50.0 and reply.paced <= 4
        rates.append(reply.paced_rate)
        now += 1000
    # 1.85 a second (a twentieth of 37) up to 37, where it last shrank; then 1.85, 3.7, 7.4...
    steps = [29.6, 31.45, 33.3, 35.15, 37.0, 38.85, 42.55, 49.95]
    assert rates == pytest.approx(steps, abs=0.002) and now == NOW + 9600
    assert not await redis.exists(partner.pace)
    # without a rate limit, it ends once past twice the rate it last shrank from (quiet_ms 0:
    # at its next success; how long it goes on first is the next test's)
    start = told(throttles=1, latest_sent_ms=now, accepted=40)
    await scripts.run(settle(shard, now, start))
    seen = []
    while (await scripts.run(settle(shard, now, told(), delivered=["99-3"]))).pace != "ended":
        seen.append(float(await redis.hget(partner.pace, "r") or 0))
        now += 1000
    assert seen[-1] >= 80.0 > seen[-2]


async def test_without_a_rate_limit_a_pace_ends_a_while_after_it_reached_its_end(
    redis: Redis, ks: Keyspace
) -> None:
    """Without a rate limit a new pace grows on past twice where it started (its start is a
    count that may be low); once a shrink said where the partner refuses, it stops at twice
    that, and ends `quiet_ms` after it got there (a timeout is heard of that late): ending at
    once sent a burst at full concurrency to a partner that refuses by holding requests."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 1)
    start = told(throttles=1, latest_sent_ms=NOW, accepted=20, max_in_flight=4, quiet_ms=5000)
    assert (await scripts.run(settle(shard, NOW, start))).paced_rate == 16.0
    ok = told(max_in_flight=4, quiet_ms=5000)
    at = NOW
    while (reply := await scripts.run(settle(shard, at, ok, delivered=["99-1"]))).pace != "ended":
        if reply.paced_rate >= 50.0:
            break
        at += 500
    assert reply.paced_rate >= 50.0  # past 40, twice the count it started from
    shrink = told(throttles=1, latest_sent_ms=at, max_in_flight=4, quiet_ms=5000)
    assert (await scripts.run(settle(shard, at, shrink))).pace == "shrunk"
    m = (await pace_of(redis, partner))["m"]
    rates: dict[int, float] = {}
    while (reply := await scripts.run(settle(shard, at, ok, delivered=["99-1"]))).pace != "ended":
        rates[at] = reply.paced_rate
        at += 500
    top = min(t for t, rate in rates.items() if rate >= 2 * m)
    assert at == top + 5000 and max(rates.values()) == 2 * m
    assert not await redis.exists(partner.pace)


async def test_a_retry_after_pauses_the_whole_partner(redis: Redis, ks: Keyspace) -> None:
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 5)
    pause = told(throttles=1, latest_sent_ms=NOW, pause_until_ms=NOW + 3000, accepted=10)
    reply = await scripts.run(settle(shard, NOW, pause))
    assert reply.paused_until_ms == NOW + 3000
    held = await scripts.run(take(shard, NOW + 2999))
    assert (held.blocked_until, held.messages) == (NOW + 3000, [])
    assert len((await scripts.run(take(shard, NOW + 3000))).messages) == 1  # 7.5/s: 1 a slice
    # the pace outlives its pause by its minute
    assert 60_000 < await redis.pttl(partner.pace) <= 63_000


async def test_an_absorbed_attempt_is_counted_until_its_message_leaves(
    redis: Redis, ks: Keyspace
) -> None:
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 2)
    await scripts.run(take(shard, NOW, pacing=False))
    spared = [lua.Retry("1-0", NOW, b"{}", spared=True), lua.Retry("2-0", NOW, b"{}")]
    await scripts.run(settle(shard, NOW, told(), retries=spared))
    assert await redis.hgetall(partner.spared) == {b"1-0": b"1"}
    took = await scripts.run(take(shard, NOW + 1, pacing=False))
    assert {(t.entry_id, t.attempt, t.spared) for t in took.messages} == {
        ("1-0", 2, 1),
        ("2-0", 2, 0),
    }
    await scripts.run(settle(shard, NOW + 2, told(), delivered=["1-0", "2-0"]))
    assert not await redis.exists(partner.spared)


async def test_a_pace_notifier_did_not_write_is_no_pace(redis: Redis, ks: Keyspace) -> None:
    """Edited by hand (or left by another version): a take ignores it, a settle starts
    again rather than failing every batch."""
    scripts, shard, partner = Scripts(redis), ks.shard_of(PARTNER), ks.partner(PARTNER)
    await backlog(redis, partner, 5)
    await redis.hset(partner.pace, mapping={"r": "fast", "c": "1e400", "p": "soon"})
    took = await scripts.run(take(shard, NOW))
    assert len(took.messages) == 5 and took.paced == 0
    grown = await scripts.run(settle(shard, NOW, told(), delivered=["1-0"]))
    assert grown.pace == "none" and not await redis.exists(partner.pace)
    await redis.hset(partner.pace, mapping={"r": "40", "c": "x"})
    start = told(throttles=1, latest_sent_ms=NOW, accepted=10)
    assert (await scripts.run(settle(shard, NOW, start))).pace == "started"
    assert (await pace_of(redis, partner))["r"] == 8.0
