"""The builders of the scripts that route: `route.lua` (messages into one shard's partner
streams), `dead_event.lua` (a malformed ingress entry into the dead letters) and `ack.lua`
(the ingress entries routed) and `forget.lua` (the markers they need no more)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from notifier.redis import keys
from notifier.redis.keys import Shard
from notifier.redis.lua.scripts import Call, as_int

#: What one part of a route call came to: the partner streams it went to, or `already` (this
#: part, or the whole message, was routed before: by a router that stopped half-way, another
#: router at the same time, or an earlier entry with the producer's id), or `gap` (an earlier
#: chunk of the message is missing here: the part goes again once that chunk is in).
PartRouted = int | Literal["already", "gap"]


class Part(msgspec.Struct, frozen=True):
    """One message's fan-out to partners of one shard, or one chunk of a large one."""

    entry_id: str
    message_id: str
    payload: bytes  # the encoded Message
    #: Seconds the shard's marker remembers the message was routed; 0: its index does.
    marker_ttl: int
    chunk: int  # 0-based
    partners: Sequence[tuple[str, bool]]  # (id, enabled)


class Routed(msgspec.Struct, frozen=True):
    woke: bool  # a partner became due now: a delivery process is to be roused
    parts: list[PartRouted]


def _part(reply: Any) -> PartRouted:
    n = int(reply)
    return "already" if n == -1 else "gap" if n == -2 else n


def route(*, shard: Shard, now_ms: int, parts: Sequence[Part], retention_ms: int) -> Call[Routed]:
    """Append each part's message to its partners' streams, each at most once; with
    `retention_ms`, the message index keeps it that long."""
    route_keys = [shard.ready, shard.leases, shard.dead]
    args: list[Any] = [
        now_ms,
        keys.DEAD_KEPT,
        retention_ms,
        shard.home,
        keys.ids_generation_ms(retention_ms),
        keys.DEDUPE_TTL * 1000,
        keys.IDS_GRACE_MS,
    ]
    for part in parts:
        named = keys.named_entry(part.message_id)
        route_keys.append(shard.seen(part.message_id))
        for partner_id, _ in part.partners:
            partner = shard.partner(partner_id)
            route_keys += [partner.stream, partner.messages]
        args += [
            part.entry_id,
            part.message_id,
            part.marker_ttl,
            part.chunk,
            part.payload,
            "".join("1" if enabled else "0" for _, enabled in part.partners),
            len(part.partners),
            shard.bucket(named or part.entry_id),
            "1" if named else "0",
            *(pid for pid, _ in part.partners),
        ]
    return Call(
        "route",
        route_keys,
        args,
        lambda reply: Routed(bool(int(reply[0])), [_part(n) for n in reply[1:]]),
    )


def forget(*, shard: Shard, message_ids: Sequence[str]) -> Call[int]:
    """Delete the route markers of messages whose entries are acknowledged."""
    return Call("forget", [shard.seen(m) for m in message_ids], [], as_int)


def dead_event(*, entry_id: str, reason: str, entry: str) -> Call[bool]:
    """Dead-letter a malformed ingress entry as `entry` (its fields as text), once; replies
    whether this call wrote it."""
    return Call(
        "dead_event",
        [keys.DEAD, keys.dead_marker(entry_id)],
        [entry_id, reason, entry, keys.DEAD_KEPT, keys.DEAD_MARKER_TTL],
        lambda reply: bool(int(reply)),
    )


def ack(*, ingress: str, entry_ids: Sequence[str], keep: bool) -> Call[int]:
    """Acknowledge routed entries (and delete them unless `keep`); replies how many were
    still pending."""
    return Call("ack", [ingress], [keys.ROUTER_GROUP, "1" if keep else "0", *entry_ids], as_int)
