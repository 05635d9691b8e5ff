"""A router's view of the partners: the index of subscriptions, kept up to date by following the
change log of each set of partner records (one on one Redis, one per shard on a Cluster), and
the event-type catalog's schemas, followed in the same round trip.

Each look costs two cheap reads per change log and one for the catalog's version when nothing
changed, so a router looks before every batch: a partner or schema saved before an event was
published is applied to it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from notifier import logs
from notifier.catalog import Catalog
from notifier.models import decode_partner
from notifier.redis import keys
from notifier.redis.keys import Keyspace, Shard
from notifier.subscriptions import Subscriptions

log = logs.get("router")


class PartnerFeed:
    def __init__(self, redis: Any, keyspace: Keyspace, catalog: Catalog) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.catalog = catalog
        self.subscriptions = Subscriptions()
        #: Per change log, the last entry applied to `subscriptions`.
        self._cursors: dict[str, bytes] = {}

    async def refresh(self) -> Subscriptions:
        """Bring the index up to date: reload only the partners that changed since the last
        look, or all of one home's partners when its change log no longer reaches back that
        far or Redis lost its data."""
        homes = self.keyspace.homes
        async with self.redis.pipeline(transaction=False) as pipe:
            for home in homes:
                pipe.xrevrange(home.changes, count=1)
                pipe.xrange(home.changes, count=1)
            self.catalog.queue(pipe)
            *ends, version = await pipe.execute()
        await self.catalog.follow(self.redis, version)
        for n, home in enumerate(homes):
            newest, oldest = ends[2 * n], ends[2 * n + 1]
            await self._follow(home, newest[0][0] if newest else None, oldest)
        return self.subscriptions

    async def _follow(self, home: Shard, latest: bytes | None, oldest: Any) -> None:
        cursor = self._cursors.get(home.changes)
        first = oldest[0][0] if oldest else None
        if (
            cursor is None
            or (latest is None and cursor != b"0-0")
            or (first is not None and later(first, cursor))
        ):
            await self._load(home)
        elif latest is not None and later(latest, cursor):
            changes = await self.redis.xrange(
                home.changes, min=b"(" + cursor, count=keys.PARTNER_CHANGES_KEPT
            )
            ids = list(dict.fromkeys(fields[b"id"] for _, fields in changes))
            records = await self.redis.hmget(home.partners, ids) if ids else []
            for pid, record in zip(ids, records, strict=True):
                self._put(pid, record)
            if changes:
                self._cursors[home.changes] = changes[-1][0]

    async def _load(self, home: Shard) -> None:
        # The cursor is read before the partners, so a change made in between is applied
        # again on the next look rather than missed.
        newest = await self.redis.xrevrange(home.changes, count=1)
        raw = await self.redis.hgetall(home.partners)
        for partner in self.subscriptions.partners():
            if self.keyspace.shard_of(partner.id).home == home.home and (
                partner.id.encode() not in raw
            ):
                self.subscriptions.remove(partner.id)
        for pid, record in raw.items():
            self._put(pid, record)
        self._cursors[home.changes] = newest[0][0] if newest else b"0-0"
        log.info("partners loaded", partners=len(raw), shard=home.number)

    def _put(self, pid: bytes, record: bytes | None) -> None:
        partner_id = pid.decode(errors="replace")
        if record is None:
            self.subscriptions.remove(partner_id)
            return
        try:
            self.subscriptions.put(decode_partner(record))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.subscriptions.remove(partner_id)
            log.error(
                "partner record unreadable, not routing to it", partner=partner_id, error=str(exc)
            )


def later(a: bytes, b: bytes) -> bool:
    """Whether stream id `a` comes after `b`."""
    ams, _, aseq = a.partition(b"-")
    bms, _, bseq = b.partition(b"-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))
