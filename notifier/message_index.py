"""The message index, read: which hash holds a message, and what it holds there.

The index (`lua/index.lua`, written by `lua/route.lua`, `lua/settle.lua` and `lua/resend.lua`,
kept for NOTIFIER_MESSAGE_RETENTION) holds each message as one field of the hash of its
ingress entry's tenth of a second: its event and, per partner it went to, the entry of its
copy in the partner's stream or its last settled state. A message notifier named
(`msg_<entry id>`) says which hash; a producer's id is found through the generations of
`ids:<n>`, newest first. One index per shard home (each shard on a Cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from notifier.models import now_ms
from notifier.redis import keys
from notifier.redis.keys import Shard
from notifier.types import CopyState

#: Generations of producer ids read per round trip when looking ids up, newest first.
GENERATIONS_AT_ONCE = 8


class CopyRecord(msgspec.Struct):
    """A partner's copy in a message's index entry (see lua/index.lua, lua/settle.lua)."""

    s: CopyState  # pending | retrying | delivered | dead
    t: int  # ms of the last change
    e: str | None = None  # the entry in the partner stream
    n: int = 0  # attempts made
    x: str | None = None  # the dead letter


_copy_json = msgspec.json.Decoder(CopyRecord).decode


def _copy(value: bytes) -> CopyRecord:
    """A partner's copy: a JSON object, or for a copy still pending just its entry id (which
    starts with the ms it was routed), the cheapest thing for lua/fan_out.lua to write."""
    if value.startswith(b"{"):
        return _copy_json(value)
    entry = value.decode()
    return CopyRecord(s="pending", t=int(entry.partition("-")[0]), e=entry)


def read_entry(value: bytes) -> tuple[dict[str, CopyRecord], bytes]:
    """A message's index field: its copies by partner, and its event (lua/index.lua). A field
    written before copies were kept in it (an upgrade) is the event alone, JSON."""
    header, newline, event = value.partition(b"\n")
    if not newline or value.startswith(b"{"):
        return {}, value
    copies = {}
    for copy in filter(None, header.split(b"\t")):
        partner, _, state = copy.partition(b" ")
        copies[partner.decode()] = _copy(state)
    return copies, event


class IndexReader:
    """Reads one deployment's message index (every home of it)."""

    def __init__(self, redis: Any, retention_ms: int) -> None:
        self.redis = redis
        self.retention_ms = retention_ms

    async def entries(
        self, home: Shard, message_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, CopyRecord], bytes]]:
        """The index entries of messages in one home (those it knows): copies and event."""
        where = await self.buckets(home, message_ids)
        found = list(where.items())
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id, bucket in found:
                pipe.hget(bucket, message_id)
            values = await pipe.execute()
        return {
            message_id: read_entry(value)
            for (message_id, _), value in zip(found, values, strict=True)
            if value is not None
        }

    async def buckets(self, home: Shard, message_ids: Sequence[str]) -> dict[str, str]:
        """Which hash of one home's index holds each message (those it may hold): said by the
        id when notifier named it, else by the generations of producer ids, newest first, a
        few per round trip, back to the retention."""
        where: dict[str, str] = {}
        unknown = []
        for message_id in dict.fromkeys(message_ids):
            entry = keys.named_entry(message_id)
            if entry is not None:
                where[message_id] = home.bucket(entry)
            else:
                unknown.append(message_id)
        if not unknown or not self.retention_ms:
            return where
        span = keys.ids_generation_ms(self.retention_ms)
        now = now_ms()
        gens = list(range(now // span, (now - self.retention_ms) // span - 1, -1))
        # the newest two first (most look-ups are of recent messages), then eight at a time
        batches = [gens[:2]] + [
            gens[start : start + GENERATIONS_AT_ONCE]
            for start in range(2, len(gens), GENERATIONS_AT_ONCE)
        ]
        for batch in batches:
            async with self.redis.pipeline(transaction=False) as pipe:
                for gen in batch:
                    pipe.hmget(home.generation(gen), unknown)
                replies = await pipe.execute()
            for reply in replies:
                for message_id, entry in zip(unknown, reply, strict=True):
                    if entry is not None and message_id not in where:
                        where[message_id] = home.bucket(entry.decode())
            unknown = [m for m in unknown if m not in where]
            if not unknown:
                break
        return where

    async def copies(self, home: Shard, message_id: str) -> dict[str, CopyRecord]:
        """The message's copies in one home's index, by partner."""
        found = await self.entries(home, [message_id])
        return found[message_id][0] if message_id in found else {}
