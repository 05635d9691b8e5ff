"""How many shards a deployment has, kept in Redis, and moving partners when that changes.

A partner's shard is a hash of its id modulo NOTIFIER_SHARDS, so a process started with another
count than the rest would look for partners where they are not. The count is recorded in
`notifier:layout` by the first process that starts, and a process whose setting differs
refuses to start, naming what to do: set the recorded count, or stop every process and move
the partners (`notifier shards move --to N`), which rewrites the layout while nothing runs.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from notifier import logs
from notifier.errors import ConfigError, Invalid
from notifier.models import now_ms
from notifier.redis import keys
from notifier.redis.keys import Keyspace, Shard
from notifier.telemetry.reports import REPORT_STALE

log = logs.get("shards")


class Layout(msgspec.Struct, frozen=True):
    shards: int
    cluster: bool


_decode = msgspec.json.Decoder(Layout).decode


async def check(redis: Any, keyspace: Keyspace) -> None:
    """Record this deployment's layout on its first start; refuse to run with another."""
    mine = Layout(len(keyspace.shards), keyspace.cluster)
    if await redis.set(keys.LAYOUT, msgspec.json.encode(mine), nx=True):
        return
    stored = await recorded(redis)
    if stored is not None and stored != mine:
        raise ConfigError(
            f"NOTIFIER_SHARDS is {mine.shards} but the deployment in this Redis has "
            f"{stored.shards} shards: set NOTIFIER_SHARDS={stored.shards}, or stop every "
            f"notifier process and run `notifier shards move --to {mine.shards}`"
        )


async def recorded(redis: Any) -> Layout | None:
    raw = await redis.get(keys.LAYOUT)
    if raw is None:
        return None
    try:
        return _decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def move(redis: Any, cluster: bool, to: int) -> dict[str, int]:
    """Move every partner to its shard of `to` shards, with all it has: its scheduling, and on
    a Cluster its keys (DUMP and RESTORE: streams keep their consumer groups and pending
    entries), its record and its dead letters. Only while no notifier process runs."""
    if not 1 <= to <= keys.MAX_SHARDS:
        raise Invalid(f"--to: must be from 1 to {keys.MAX_SHARDS}")
    live = [name for name, raw in (await redis.hgetall(keys.PROCESSES)).items() if _fresh(raw)]
    if live:
        raise Invalid(
            f"{len(live)} notifier process(es) still report to this Redis: stop them all first"
        )
    stored = await recorded(redis)
    old = Keyspace(stored.shards if stored else 1, cluster)
    new = Keyspace(to, cluster)
    moved = 0
    for home in old.homes:
        for pid in [p.decode() for p in await redis.hkeys(home.partners)]:
            if await _move_partner(redis, pid, old, new):
                moved += 1
    letters = 0
    if cluster:
        for home in old.homes:
            letters += await _move_dead_letters(redis, home, new)
    await redis.set(keys.LAYOUT, msgspec.json.encode(Layout(to, cluster)))
    log.info("partners moved to their new shards", shards=to, partners=moved)
    return {"shards": to, "partners_moved": moved, "dead_letters_moved": letters}


async def _move_partner(redis: Any, pid: str, old: Keyspace, new: Keyspace) -> bool:
    was, now = old.shard_of(pid), new.shard_of(pid)
    if was.prefix == now.prefix:
        return False
    due = await redis.zscore(was.ready, pid)
    if old.cluster:
        for before, after in zip(was.partner(pid).all(), now.partner(pid).all(), strict=True):
            dumped = await redis.dump(before)
            if dumped is not None:
                await redis.restore(after, 0, dumped, replace=True)
                await redis.delete(before)
        record = await redis.hget(was.partners, pid)
        await redis.hset(now.partners, pid, record)
        await redis.xadd(now.changes, {"id": pid})
        if await redis.srem(was.disabled, pid):
            await redis.sadd(now.disabled, pid)
        await redis.hdel(was.partners, pid)
        await redis.xadd(was.changes, {"id": pid})
    if due is not None:
        # due now: whoever starts first looks at it at once
        await redis.zadd(now.ready, {pid: min(float(due), now_ms())})
    await redis.zrem(was.ready, pid)
    await redis.zrem(was.leases, pid)
    return True


async def _move_dead_letters(redis: Any, home: Shard, new: Keyspace) -> int:
    """A Cluster shard's dead letters follow their partners to their new shards."""
    moved, start = 0, "-"
    while rows := await redis.xrange(home.dead, min=start, count=500):
        start = "(" + rows[-1][0].decode()
        for entry_id, fields in rows:
            partner = fields.get(b"partner", b"").decode()
            target = new.shard_of(partner).dead if partner else keys.DEAD
            if target != home.dead:
                await redis.xadd(target, fields, maxlen=keys.DEAD_KEPT, approximate=True)
                await redis.xdel(home.dead, entry_id)
                moved += 1
    return moved


def _fresh(raw: bytes) -> bool:
    try:
        at = msgspec.json.decode(raw, type=dict[str, Any]).get("at", 0)
    except msgspec.DecodeError:
        return False
    return isinstance(at, int | float) and time.time() - at <= REPORT_STALE
