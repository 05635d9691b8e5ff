"""The rate-limit window of `lua/take.lua` (counters over slices, `lua/window.lua`) on its own,
against a real Redis, driven by a simulated clock: never more than the limit in any window by
when the partner handled the requests, however late a request leaves after its take, and most
of the limit used when it binds."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from notifier.models import Message
from notifier.ratelimit import slice_of
from notifier.redis import keys, lua
from notifier.redis.keys import Keyspace
from notifier.redis.lua import Scripts
from tests.integration.test_lua import take

KS = Keyspace()
PARTNER = "ptn_window"
LIMIT = 100
WINDOW_MS = 1000


@dataclass
class Sent:
    entry_id: str
    taken_ms: int
    answered_ms: int


async def _simulate(
    redis: Redis, seconds: int, delay: dict[int, int], step_ms: int = 5
) -> list[int]:
    """Take every `step_ms` of simulated time for `seconds`, each request handled by the
    partner `delay[n]` ms after its take (0 when not given; n counts requests), answered and
    settled 1 ms later; returns when the partner handled them."""
    scripts = Scripts(redis)
    shard, partner = KS.shard_of(PARTNER), KS.partner(PARTNER)
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    body = msgspec.json.encode(
        Message(id="m", type="t", timestamp="2026-01-01T00:00:00Z", data=msgspec.Raw(b"{}"))
    )
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(LIMIT * (seconds + 1)):
            pipe.xadd(partner.stream, {"m": body})
        await pipe.execute()
    start = 1_000_000_000  # any epoch ms; a round number keeps slices aligned with it
    open_: list[Sent] = []
    sent: list[int] = []
    for now in range(start, start + seconds * 1000, step_ms):
        due = [s for s in open_ if s.answered_ms <= now]
        if due:
            open_ = [s for s in open_ if s.answered_ms > now]
            await scripts.run(_settle(shard, now, due))
        took = await scripts.run(
            take(shard, PARTNER, now, LIMIT, want=10, window_ms=WINDOW_MS, leased=False)
        )
        for taken in took.messages:
            late = delay.get(len(sent), 0)
            sent.append(now + late)
            open_.append(Sent(taken.entry_id, taken.taken_ms, now + late + 1))
    return sorted(sent)


def _settle(shard: keys.Shard, now: int, done: list[Sent]) -> lua.Call[lua.Settled]:
    return lua.settle(
        shard=shard,
        partner=shard.partner(PARTNER),
        now_ms=now,
        delivered=[s.entry_id for s in done],
        retries=[],
        dead=[],
        moved=[
            (s.entry_id, s.taken_ms, s.answered_ms)
            for s in done
            if slice_of(s.answered_ms, WINDOW_MS) > slice_of(s.taken_ms, WINDOW_MS)
        ],
        window_ms=WINDOW_MS,
        records=[b"{}" for _ in done],
    )


def most_in_any_window(times: list[int]) -> int:
    """The most send times in any half-open window [t, t + WINDOW_MS)."""
    return max(bisect.bisect_left(times, t + WINDOW_MS) - i for i, t in enumerate(times))


async def test_a_binding_limit_is_exact_and_used(redis: Redis) -> None:
    # takes every 7 ms, so that requests fall anywhere in a slice, not on its edges
    sent = await _simulate(redis, seconds=10, delay={}, step_ms=7)
    assert most_in_any_window(sent) <= LIMIT
    # 10 s at 100 a second; the oldest slice counts whole (1 %), the steps cost a little
    assert len(sent) >= 0.95 * 10 * LIMIT, len(sent)


async def test_a_request_in_flight_counts_until_it_is_settled(redis: Redis) -> None:
    """The first window's requests all leave 1.2 s after their takes: while in flight past
    their window they still count, so the takes after it wait for their settles."""
    sent = await _simulate(redis, seconds=4, delay=dict.fromkeys(range(LIMIT), 1200))
    assert most_in_any_window(sent) <= LIMIT


async def test_requests_sent_late_count_from_when_they_were_sent(redis: Redis) -> None:
    """A request that waited (for the CPU, for a connection, in the partner's queue) after its
    take is handled in a later slice, some after the window of their take has passed: still
    never more than the limit by the partner's clock, settled before the next takes or not."""
    rng = random.Random(7)
    delay = {n: rng.choice((0, 0, 0, 40, 300, 900, 1500)) for n in range(2000)}
    sent = await _simulate(redis, seconds=8, delay=delay, step_ms=7)
    assert most_in_any_window(sent) <= LIMIT
    assert len(sent) >= 0.6 * 8 * LIMIT, len(sent)  # in flight longer, counted longer


async def test_a_lowered_limit_holds_from_the_moment_it_is_saved(redis: Redis) -> None:
    """A partner that sent 20 in the last second, its limit lowered from 100 to 10 a second:
    the window is counted in other slices then, and the next take sends nothing until the
    requests already sent have left the new window."""
    scripts = Scripts(redis)
    shard, partner = KS.shard_of(PARTNER), KS.partner(PARTNER)
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    body = msgspec.json.encode(
        Message(id="m", type="t", timestamp="2026-01-01T00:00:00Z", data=msgspec.Raw(b"{}"))
    )
    for _ in range(30):
        await redis.xadd(partner.stream, {"m": body})

    def take_at(now: int, limit: int, window_ms: int) -> lua.Call[lua.TakeReply]:
        return take(shard, PARTNER, now, limit, want=10, window_ms=window_ms, leased=False)

    start = 1_000_000_000
    sent = 0
    for step in range(2):  # 10 a tenth of the window
        reply = await scripts.run(take_at(start + 100 * step, 100, 1000))
        sent += len(reply.messages)
    assert sent == 20
    lowered = await scripts.run(take_at(start + 300, 10, 2000))  # 10 per 2 s, another width
    assert lowered.messages == [] and lowered.blocked_until > start + 300
