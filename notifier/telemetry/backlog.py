"""The deployment's state as an operator sees it: every partner with work or trouble, its
backlog and the age of its oldest message, and how far routing lags behind producers.

It costs O(partners with work): the partners looked at are those in a shard's `ready` or
`leases` (a partner with nothing to do is in neither) and the disabled ones, a few
commands each in one pipeline, so 10,000 idle partners add nothing. The metrics leader reads
it for the gauges (`observer.py`), and `notifier top` reads it for its table.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from redis.asyncio import Redis

from notifier import pacing
from notifier.models import decode_partner
from notifier.partners import Pacing
from notifier.redis.keys import Keyspace


class PartnerBacklog(msgspec.Struct, frozen=True):
    id: str
    name: str
    new: int  # routed, not taken yet
    in_flight: int  # being sent
    retrying: int  # failed, waiting for their retry
    oldest_age_s: float  # of the oldest message waiting, 0 when none
    breaker_open: bool
    disabled: bool
    rate_limit: str | None = None
    owner: str | None = None
    pacing: Pacing | None = None  # while notifier paces it (it said it was overloaded)


class Snapshot(msgspec.Struct, frozen=True):
    at: float
    partners_registered: int
    partners: list[PartnerBacklog]
    ingress_length: int
    ingress_lag_s: float  # age of the oldest event not routed yet, 0 when none


def _age(entry_id: bytes | None, now: float) -> float:
    if not entry_id:
        return 0.0
    return max(0.0, now - int(entry_id.split(b"-", 1)[0]) / 1000)


def _first_id(reply: Any) -> bytes | None:
    return reply[0][0] if reply else None


async def read_snapshot(redis: Redis, keyspace: Keyspace, ingress: str) -> Snapshot:
    client: Any = redis  # redis-py types replies as bytes | str; this client answers bytes
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(ingress)
        pipe.xrange(ingress, count=1)
        for shard in keyspace.shards:
            pipe.zrange(shard.ready, 0, -1)
            pipe.zrange(shard.leases, 0, -1)
        for home in keyspace.homes:
            pipe.smembers(home.disabled)
            pipe.hlen(home.partners)
        length, oldest, *found = await pipe.execute()
    scheduled = found[: 2 * len(keyspace.shards)]
    held = found[2 * len(keyspace.shards) :]
    disabled = {d.decode() for members in held[0::2] for d in members}
    registered = sum(int(n) for n in held[1::2])
    now = time.time()
    ids = sorted({pid.decode() for z in scheduled for pid in z} | disabled)
    return Snapshot(
        at=now,
        partners_registered=registered,
        partners=await _backlogs(client, keyspace, ids, disabled, now) if ids else [],
        ingress_length=int(length),
        ingress_lag_s=round(_age(_first_id(oldest), now), 3),
    )


async def _backlogs(
    client: Any, keyspace: Keyspace, ids: list[str], disabled: set[str], now: float
) -> list[PartnerBacklog]:
    """The backlog of each of these partners, read in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for pid in ids:
            pk = keyspace.partner(pid)
            pipe.hget(keyspace.shard_of(pid).partners, pid)
            pipe.xlen(pk.stream)
            pipe.zcard(pk.due)
            pipe.zcard(pk.inflight)
            pipe.xrange(pk.stream, count=1)
            pipe.exists(pk.breaker)
            pipe.hmget(pk.pace, pacing.SHOWN_FIELDS)
        replies = await pipe.execute(raise_on_error=False)
    partners: list[PartnerBacklog] = []
    for n, pid in enumerate(ids):
        record, length, due, inflight, first, breaker, pace = replies[7 * n : 7 * n + 7]
        if isinstance(record, Exception):
            record = None
        if any(isinstance(r, Exception) for r in (length, due, inflight, first, breaker)):
            continue  # a broken key is the router's and janitor's business, not a scrape's
        if record is None and pid not in disabled:
            continue  # removed meanwhile
        name, rate_limit, owner = _described(pid, record)
        partners.append(
            PartnerBacklog(
                id=pid,
                name=name,
                new=max(0, int(length) - int(due) - int(inflight)),
                in_flight=int(inflight),
                retrying=int(due),
                oldest_age_s=round(_age(_first_id(first), now), 3),
                breaker_open=bool(breaker),
                disabled=pid in disabled,
                rate_limit=rate_limit,
                owner=owner,
                pacing=None if isinstance(pace, Exception) else pacing.shown(pace, int(now * 1000)),
            )
        )
    return partners


def _described(pid: str, record: bytes | None) -> tuple[str, str | None, str | None]:
    """A partner's name, rate limit and owner from its record (its id for a name when the
    record is gone or unreadable)."""
    if record is not None:
        try:
            partner = decode_partner(record)
            return partner.name, partner.rate_limit, partner.owner
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    return pid, None, None
