"""The Lua scripts on their own, against a real Redis: what they must never write, and that
each touches the keys of one slot in the layout of a Cluster.

Every test runs with the key map of one Redis and with that of a three-shard Cluster (a single
redis-server takes either: only a Cluster refuses keys of several slots in one script, which
`test_every_call_touches_one_slot_on_a_cluster` checks of every builder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from notifier.models import Message
from notifier.redis import keys, lua
from notifier.redis.keys import Keyspace, Shard
from notifier.redis.lua import Scripts, source
from tests.helpers import entries

PARTNER = "ptn_gone"


@pytest.fixture(params=["one redis", "cluster"])
def ks(request: pytest.FixtureRequest) -> Keyspace:
    return Keyspace() if request.param == "one redis" else Keyspace(3, cluster=True)


def message(n: int) -> bytes:
    return msgspec.json.encode(
        Message(id=f"m{n}", type="t", timestamp="2026-01-01T00:00:00Z", data=msgspec.Raw(b"{}"))
    )


def part(
    n: int, partners: list[tuple[str, bool]], *, entry: str = "", chunk: int = 0, ttl: int = 60
) -> lua.Part:
    return lua.Part(
        entry_id=entry or f"{n + 1}-0",
        message_id=f"m{n}",
        payload=message(n),
        marker_ttl=ttl,
        chunk=chunk,
        partners=partners,
    )


def take(
    shard: Shard,
    partner: str,
    now: int = 1000,
    limit: int = 0,
    *,
    want: int = 50,
    window_ms: int | None = None,
    leased: bool = True,
    pacing: bool = True,
    most: int = 0,
    open_ms: int = 0,
) -> lua.Call[lua.TakeReply]:
    """A take by consumer `c` (a second's window unless given, the lease renewed a minute
    unless not `leased`, visible again after a minute)."""
    return lua.take(
        shard=shard,
        partner=shard.partner(partner),
        consumer="c",
        now_ms=now,
        want=want,
        limit=limit,
        window_ms=(1000 if limit else 0) if window_ms is None else window_ms,
        ordered=False,
        lease_until=now + 60_000 if leased else 0,
        visible_ms=60_000,
        pacing=pacing,
        most=most,
        open_ms=open_ms,
    )


def settle(shard: Shard, partner: str, now: int, **outcomes: Any) -> lua.Call[lua.Settled]:
    return lua.settle(
        shard=shard,
        partner=shard.partner(partner),
        now_ms=now,
        delivered=outcomes.get("delivered", []),
        retries=outcomes.get("retries", []),
        dead=outcomes.get("dead", []),
        moved=outcomes.get("moved", []),
        window_ms=outcomes.get("window_ms", 0),
        records=outcomes.get("records", []),
    )


async def test_scripts_write_nothing_for_a_partner_whose_stream_is_gone(
    redis: Redis, ks: Keyspace
) -> None:
    """After FLUSHALL (or a partner's removal), calls still on their way must not bring back
    keys of a partner that no longer exists."""
    scripts = Scripts(redis)
    shard = ks.shard_of(PARTNER)
    took = await scripts.run(take(shard, PARTNER, limit=5))
    assert took.gone and took.blocked_until == 0 and took.messages == []
    failing = await scripts.run(
        settle(
            shard,
            PARTNER,
            1000,
            delivered=["1-0"],
            retries=[lua.Retry("2-0", 5000, b'{"a":1}')],
            dead=[lua.Dead("3-0", "gave up", message(3), b'{"a":1}', "now")],
            moved=[("1-0", 900, 1000)],
            window_ms=1000,
            records=[b'{"a":1}', b'{"a":2}'],
        )
    )
    assert failing == lua.Settled(0, False)
    await redis.zadd(shard.ready, {PARTNER: 0})
    await redis.zadd(shard.leases, {PARTNER: 61_000})
    released = await scripts.run(
        lua.release(
            shard=shard,
            partner=shard.partner(PARTNER),
            now_ms=1000,
            blocked_until=0,
            active=True,
            held_until=61_000,
        )
    )
    assert released.state == "idle"
    assert await redis.keys("*") == []


async def test_settling_a_batch_twice_changes_nothing_more(redis: Redis, ks: Keyspace) -> None:
    """A process that lost Redis settles its batch again when Redis returns; the first settle
    may have run. The message is dead-lettered once and a retry is not brought back."""
    scripts = Scripts(redis)
    shard, partner = ks.shard_of("ptn_a"), ks.partner("ptn_a")
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(3):
        await redis.xadd(partner.stream, {"m": message(n)}, id=f"{n + 1}-0")
    took = await scripts.run(take(shard, "ptn_a"))
    assert [t.entry_id for t in took.messages] == ["1-0", "2-0", "3-0"]
    batch = settle(
        shard,
        "ptn_a",
        2000,
        delivered=["1-0"],
        retries=[lua.Retry("2-0", 9000, b'{"n":2}')],
        dead=[lua.Dead("3-0", "gave up", message(2), b'{"n":3}', "now")],
        records=[b'{"n":1}', b'{"n":2}', b'{"n":3}'],
    )
    await scripts.run(batch)
    # the retry is taken and settled as delivered before the batch is settled again
    await redis.zadd(partner.due, {"2-0": 0})
    await scripts.run(take(shard, "ptn_a", now=3000))
    await scripts.run(settle(shard, "ptn_a", 3000, delivered=["2-0"], records=[b'{"n":2}']))
    await scripts.run(batch)
    assert await redis.xlen(shard.dead) == 1
    assert await redis.xlen(partner.stream) == 0
    assert await redis.zcard(partner.due) == 0
    assert await redis.hlen(partner.history) == 0


async def test_a_take_counts_the_requests_every_serve_has_open(redis: Redis, ks: Keyspace) -> None:
    """A serve gives its partner back with requests still open: the next serve's take counts
    them against max_in_flight, except those taken longer ago than a request can last (a dead
    process's, which only their visibility timeout brings back)."""
    scripts = Scripts(redis)
    shard, partner = ks.shard_of("ptn_a"), ks.partner("ptn_a")
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(10):
        await redis.xadd(partner.stream, {"m": message(n)}, id=f"{n + 1}-0")
    first = await scripts.run(take(shard, "ptn_a", now=1000, most=3, open_ms=5000))
    assert [t.entry_id for t in first.messages] == ["1-0", "2-0", "3-0"]
    full = await scripts.run(take(shard, "ptn_a", now=2000, most=3, open_ms=5000))
    assert (full.messages, full.blocked_until) == ([], 2100)  # looks again shortly
    await scripts.run(settle(shard, "ptn_a", 2000, delivered=["1-0"], records=[b"{}"]))
    one = await scripts.run(take(shard, "ptn_a", now=2001, most=3, open_ms=5000))
    assert [t.entry_id for t in one.messages] == ["4-0"]
    # taken more than open_ms ago: over, whether or not their answers were recorded
    later = await scripts.run(take(shard, "ptn_a", now=6002, most=3, open_ms=5000))
    assert [t.entry_id for t in later.messages] == ["5-0", "6-0"]
    assert await redis.zcard(partner.inflight) == 5


async def test_an_unlimited_partner_keeps_no_window_log(redis: Redis, ks: Keyspace) -> None:
    scripts = Scripts(redis)
    partner = ks.partner("ptn_a")
    await redis.xgroup_create(partner.stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    for n in range(50):
        await redis.xadd(partner.stream, {"m": message(n)})
    took = await scripts.run(take(ks.shard_of("ptn_a"), "ptn_a"))
    assert len(took.messages) == 50
    assert not await redis.exists(partner.slices)


async def test_a_late_release_leaves_another_holders_lease_alone(
    redis: Redis, ks: Keyspace
) -> None:
    """A process whose lease ran out while Redis was away releases late; the partner is now
    another process's, whose lease and score must stand."""
    scripts = Scripts(redis)
    shard = ks.shard_of("ptn_a")
    await redis.xadd(shard.partner("ptn_a").stream, {"m": message(1)})
    await redis.zadd(shard.ready, {"ptn_a": 200_000})
    await redis.zadd(shard.leases, {"ptn_a": 200_000})  # the new holder's lease
    reply = await scripts.run(
        lua.release(
            shard=shard,
            partner=shard.partner("ptn_a"),
            now_ms=100_000,
            blocked_until=0,
            active=True,
            held_until=61_000,
        )
    )
    assert reply.state == "held"
    assert await redis.zscore(shard.leases, "ptn_a") == 200_000
    assert await redis.zscore(shard.ready, "ptn_a") == 200_000


async def test_a_split_fan_out_resumed_by_another_router_appends_each_copy_once(
    redis: Redis, ks: Keyspace
) -> None:
    """A router that stopped after the first chunk of a large fan-out: the one that routes
    the entry again skips what was done, and a third run appends nothing."""
    scripts = Scripts(redis)
    shard = ks.shards[0]
    partners = [(f"ptn_{n}", True) for n in range(6)]

    def chunks() -> list[lua.Call[lua.Routed]]:
        return [
            lua.route(
                shard=shard,
                now_ms=1000,
                parts=[part(1, partners[i : i + 2], entry="5-0", chunk=i // 2)],
                retention_ms=0,
            )
            for i in range(0, 6, 2)
        ]

    first_router = chunks()
    assert (await scripts.run(first_router[0])).parts == [2]  # then it stops
    assert await redis.get(shard.seen("m1")) == b"5-0 1"
    replies = [(await scripts.run(call)).parts for call in chunks()]  # the next, from 0
    assert replies == [["already"], [2], [2]]
    for pid, _ in partners:
        assert await redis.xlen(shard.partner(pid).stream) == 1
    assert [(await scripts.run(call)).parts for call in chunks()] == [["already"]] * 3


async def test_the_message_index_remembers_what_was_routed(redis: Redis, ks: Keyspace) -> None:
    """With the index on (a marker ttl of 0), each partner's copy field says it has the
    message: chunks routed again in any order, with partners added or gone meanwhile, and a
    producer id published twice within one call or two, reach each partner once, without a
    marker key."""
    scripts = Scripts(redis)
    shard = ks.shards[0]
    partners = [(f"ptn_{n}", True) for n in range(5)]

    def call(*parts: lua.Part) -> lua.Call[lua.Routed]:
        return lua.route(shard=shard, now_ms=1000, parts=list(parts), retention_ms=60_000)

    late = part(1, partners[2:4], entry="5-0", chunk=1, ttl=0)
    assert (await scripts.run(call(late))).parts == [2]  # before its chunk 0: no matter
    first = part(1, partners[:2], entry="5-0", chunk=0, ttl=0)
    assert (await scripts.run(call(first, late))).parts == [2, "already"]
    # routed again after a partner was added: only the new one gets it
    again = part(1, partners[3:], entry="5-0", chunk=1, ttl=0)
    assert (await scripts.run(call(again))).parts == [1]
    twice = [part(2, partners[:1], entry=e, ttl=0) for e in ("6-0", "7-0")]
    assert (await scripts.run(call(*twice))).parts == [1, "already"]
    assert (await scripts.run(call(twice[1]))).parts == ["already"]
    for pid, _ in partners:
        assert await redis.xlen(shard.partner(pid).stream) == (2 if pid == "ptn_0" else 1)
    assert not await redis.keys("*seen*")


async def test_a_producer_id_is_kept_where_it_was_first_routed(redis: Redis, ks: Keyspace) -> None:
    """The index keeps a producer's message in the hash of its first entry's tenth of a
    second: the same id published again seconds later (another tenth), in the same call or a
    later one, finds it there and goes nowhere twice."""
    scripts = Scripts(redis)
    shard = ks.shards[0]

    def call(*entries: str) -> lua.Call[lua.Routed]:
        parts = [part(3, [("ptn_a", True)], entry=e, ttl=0) for e in entries]
        return lua.route(shard=shard, now_ms=9000, parts=parts, retention_ms=60_000)

    assert (await scripts.run(call("1000-0", "2500-0"))).parts == [1, "already"]
    assert (await scripts.run(call("4000-0"))).parts == ["already"]
    assert await redis.xlen(shard.partner("ptn_a").stream) == 1
    assert await redis.hexists(shard.bucket("1000-0"), "m3")
    assert not await redis.exists(shard.bucket("2500-0"), shard.bucket("4000-0"))


async def test_a_chunk_whose_earlier_chunk_is_missing_is_a_gap(redis: Redis, ks: Keyspace) -> None:
    """Calls of one pipeline run even when an earlier one failed: a chunk 1 that finds no
    chunk 0 writes nothing and says so, to go again once chunk 0 is in."""
    scripts = Scripts(redis)
    shard = ks.shards[0]
    late = lua.route(
        shard=shard, now_ms=1000, parts=[part(1, [("ptn_b", True)], chunk=1)], retention_ms=0
    )
    assert (await scripts.run(late)).parts == ["gap"]
    assert not await redis.exists(shard.partner("ptn_b").stream)


async def test_a_producer_id_published_twice_is_routed_once(redis: Redis, ks: Keyspace) -> None:
    """Two entries with the same producer id: the second finds the shard's marker of the
    message under the first entry's id, and goes nowhere; so does a batch run again."""
    scripts = Scripts(redis)
    shard = ks.shards[0]
    partners = [("ptn_a", True), ("ptn_b", True)]

    def call(entry: str) -> lua.Call[lua.Routed]:
        return lua.route(
            shard=shard,
            now_ms=1000,
            parts=[part(1, partners, entry=entry, ttl=keys.DEDUPE_TTL), part(2, partners)],
            retention_ms=60_000,
        )

    assert (await scripts.run(call("7-0"))).parts == [2, 2]
    assert (await scripts.run(call("8-0"))).parts == ["already", "already"]
    for pid, _ in partners:
        assert await redis.xlen(shard.partner(pid).stream) == 2
    assert 86_000 < await redis.ttl(shard.seen("m1")) <= keys.DEDUPE_TTL
    assert await redis.hexists(shard.bucket("7-0"), "m1")


async def test_a_batch_wakes_each_partner_by_the_wake_rule_once(redis: Redis, ks: Keyspace) -> None:
    """A routed batch wakes its partners together (lua/wake_partners.lua): a leased partner
    keeps its score (its holder looks again), one due already keeps its own, an idle one is
    due now however many messages it got, and a disabled one is not scheduled. The call says
    a delivery process is to be roused, and writes no token itself (the wake-up list is
    shared by every shard, in a slot of its own on a Cluster)."""
    scripts = Scripts(redis)
    shard = ks.shards[0]
    await redis.zadd(shard.leases, {"ptn_leased": 90_000})
    await redis.zadd(shard.ready, {"ptn_leased": 90_000, "ptn_due": 500})
    targets = ["ptn_idle", "ptn_leased", "ptn_due", "ptn_idle", "ptn_off"]
    parts = [part(n, [(t, t != "ptn_off")]) for n, t in enumerate(targets)]
    routed = await scripts.run(lua.route(shard=shard, now_ms=1000, parts=parts, retention_ms=0))
    assert routed == lua.Routed(True, [1, 1, 1, 1, 1])
    assert await redis.zrange(shard.ready, 0, -1, withscores=True) == [
        (b"ptn_due", 500.0),
        (b"ptn_idle", 1000.0),
        (b"ptn_leased", 90_000.0),
    ]
    assert not await redis.exists(keys.WAKE)
    assert await redis.xlen(shard.partner("ptn_idle").stream) == 2
    assert await redis.xlen(shard.partner("ptn_off").stream) == 1
    again = [part(9, [("ptn_leased", True)])]
    assert not (
        await scripts.run(lua.route(shard=shard, now_ms=1000, parts=again, retention_ms=0))
    ).woke


async def test_a_stale_partner_record_is_not_saved(redis: Redis, ks: Keyspace) -> None:
    """A change is saved only over the record it was made from: one made from an older
    record (another change landed meanwhile) is refused, to be made again."""
    scripts = Scripts(redis)
    shard = ks.shard_of("ptn_a")

    def save(expected: bytes, record: bytes) -> lua.Call[lua.Saved]:
        return lua.save_partner(
            shard=shard,
            partner_id="ptn_a",
            expected=expected,
            record=record,
            enabled=True,
            enabling=False,
            now_ms=1000,
        )

    assert (await scripts.run(save(b"", b"v1"))).saved
    assert not (await scripts.run(save(b"", b"v1-again"))).saved  # it exists now
    assert (await scripts.run(save(b"v1", b"v2"))).saved
    assert not (await scripts.run(save(b"v1", b"v3"))).saved
    assert await redis.hget(shard.partners, "ptn_a") == b"v2"
    assert await redis.xlen(shard.changes) == 2


def _calls(ks: Keyspace) -> dict[str, lua.Call[Any]]:
    shard = ks.shard_of("ptn_a")
    partner = ks.partner("ptn_a")
    mine = [p for p in (f"ptn_{n}" for n in range(50)) if ks.shard_of(p) == shard][:3]
    index = [lua.IndexUpdate("m1", "3-0", "x", 1)]
    return {
        "route": lua.route(
            shard=shard,
            now_ms=1,
            parts=[part(1, [(p, True) for p in mine]), part(2, [(mine[0], True)])],
            retention_ms=1,
        ),
        "lease": lua.lease(shard=shard, now_ms=1, lease_until=2, count=4),
        "unlease": lua.unlease(shard=shard, now_ms=1, lease_until=2),
        "take": take(shard, "ptn_a"),
        "settle": lua.settle(
            shard=shard,
            partner=partner,
            now_ms=1,
            delivered=["1-0"],
            retries=[],
            dead=[lua.Dead("3-0", "x", message(1), b"{}", "now")],
            moved=[("1-0", 1, 20)],
            window_ms=1000,
            records=[b"{}"],
            index=index,
        ),
        "release": lua.release(
            shard=shard, partner=partner, now_ms=1, blocked_until=0, active=True, held_until=1
        ),
        "wake": lua.wake(shard=shard, now_ms=1, partner_ids=mine),
        "resend": lua.resend(
            shard=shard, partner_id="ptn_a", message_ids=["m1"], now_ms=1, retention_ms=1
        ),
        "save_partner": lua.save_partner(
            shard=shard,
            partner_id="ptn_a",
            expected=b"",
            record=b"{}",
            enabled=True,
            enabling=True,
            now_ms=1,
        ),
        "remove_partner": lua.remove_partner(shard=shard, partner_id="ptn_a"),
        "dead_event": lua.dead_event(entry_id="1-0", reason="x", entry="{}"),
        "ack": lua.ack(ingress="notifier:events", entry_ids=["1-0"], keep=False),
        "rouse": lua.rouse(shards=[0]),
        "forget_reports": lua.forget_reports(stale=[(b"a", b"{}"), (b"b", b"{}")]),
    }


async def test_a_report_made_again_since_it_was_read_as_stale_is_kept(redis: Redis) -> None:
    """The metrics leader removes the reports of stopped processes by what it read: one whose
    process reported again meanwhile stays."""
    await redis.hset(keys.PROCESSES, mapping={"gone": "old", "back": "old", "other": "x"})
    await redis.hset(keys.PROCESSES, "back", "new")  # reported again after the read
    stale = [(b"gone", b"old"), (b"back", b"old"), (b"never", b"old")]
    assert await Scripts(redis).run(lua.forget_reports(stale=stale)) == 1
    assert await redis.hgetall(keys.PROCESSES) == {b"back": b"new", b"other": b"x"}


@pytest.mark.parametrize("name", sorted(_calls(Keyspace(3, cluster=True))))
def test_every_call_touches_one_slot_on_a_cluster(name: str) -> None:
    call = _calls(Keyspace(3, cluster=True))[name]
    slots: Callable[[str], int] = lambda key: key_slot(key.encode())  # noqa: E731
    assert len({slots(k) for k in call.keys}) == 1, call.keys


def test_shards_spread_over_the_slot_ranges_of_the_primaries() -> None:
    """Shard n's slot is in the n-th equal range of the 16,384 slots, so three primaries
    (which `redis-cli --cluster create` gives equal runs of slots) hold 16 shards 5/5/6."""
    space = Keyspace(16, cluster=True)
    slots = [key_slot(s.ready.encode()) for s in space.shards]
    assert [slot * 16 // 16384 for slot in slots] == list(range(16))
    primaries = [sum(1 for slot in slots if slot * 3 // 16384 == p) for p in range(3)]
    assert sorted(primaries) == [5, 5, 6]


@pytest.mark.parametrize(
    "entry", ["0-0", "5-1", "99-0", "100-0", "0001-2", "1764000000123-5", "999999999999999-1"]
)
async def test_the_index_names_its_hashes_as_the_key_map_does(redis: Redis, entry: str) -> None:
    """lua/index.lua makes the names of the index's hashes from a prefix; the API reads them
    by the key map's: both must name the same hash."""
    shard = Keyspace().shards[0]
    check = source("index") + "\nreturn {index_bucket(ARGV[1], ARGV[2]), index_named(ARGV[3])}"
    reply = await redis.eval(check, 0, shard.home, entry, f"msg_{entry}")
    assert [v.decode() for v in reply] == [shard.bucket(entry), keys.named_entry(f"msg_{entry}")]


async def test_a_batch_of_resends_sends_each_known_message_once_more(
    redis: Redis, ks: Keyspace
) -> None:
    """A recover resends its messages in batches, one script call each: every message the
    index knows for the partner gets a new entry (its waiting copy replaced), one it does not
    know is said so, and the partner is woken once."""
    scripts = Scripts(redis)
    shard = ks.shard_of("ptn_a")
    partner = shard.partner("ptn_a")
    await scripts.run(
        lua.route(
            shard=shard,
            now_ms=1000,
            parts=[part(n, [("ptn_a", True)], ttl=0) for n in range(3)],
            retention_ms=60_000,
        )
    )
    await redis.zrem(shard.ready, "ptn_a")
    first = [e for e, _ in await entries(redis, partner.stream)]
    resent = await scripts.run(
        lua.resend(
            shard=shard,
            partner_id="ptn_a",
            message_ids=["m0", "nope", "m2"],
            now_ms=2000,
            retention_ms=60_000,
        )
    )
    assert resent.woke and resent.entries[1] is None
    kept = [e for e, _ in await entries(redis, partner.stream)]
    assert kept == [first[1], *(e.encode() for e in resent.entries if e)]
    assert await redis.zscore(shard.ready, "ptn_a") == 2000
