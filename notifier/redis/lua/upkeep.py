"""The builders of the scripts outside the delivery loop: waking partners (`wake.lua`,
`rouse.lua`), sending a message again (`resend.lua`), the lock of one process (`hold.lua`) and
pruning consumer groups (`prune_consumers.lua`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from notifier.redis import keys
from notifier.redis.keys import Shard
from notifier.redis.lua.scripts import Call, as_int


def wake(*, shard: Shard, now_ms: int, partner_ids: Sequence[str]) -> Call[bool]:
    """Mark partners of one shard that have messages as having work now, unless leased or
    parked at their rate limit; replies whether a delivery process is to be roused."""
    return Call(
        "wake",
        [shard.ready, shard.leases, *(shard.partner(pid).stream for pid in partner_ids)],
        [now_ms, *partner_ids],
        lambda reply: bool(int(reply)),
    )


def rouse(*, shards: Sequence[int]) -> Call[int]:
    """Put a wake-up token per shard on `notifier:wake`, for delivery processes blocked
    waiting for work."""
    return Call("rouse", [keys.WAKE], [keys.WAKE_KEPT, *shards], as_int)


class Resent(msgspec.Struct, frozen=True):
    entry_id: str  # the message's new entry in the partner stream
    woke: bool


def _resent(reply: Any) -> Resent | None:
    if int(reply[0]) != 1:
        return None
    return Resent(reply[1].decode(), bool(int(reply[2])))


def resend(*, shard: Shard, partner_id: str, message_id: str, now_ms: int) -> Call[Resent | None]:
    """Send a message to a partner again, same webhook-id, fresh schedule; None when the index
    does not know the message for this partner."""
    partner = shard.partner(partner_id)
    return Call(
        "resend",
        [
            partner.stream,
            partner.due,
            partner.inflight,
            partner.history,
            shard.message_index(message_id),
            shard.dead,
            shard.ready,
            shard.leases,
            partner.spared,
        ],
        [keys.DELIVERY_GROUP, partner_id, now_ms, message_id],
        _resent,
    )


def hold(*, lock: str, me: str, ttl_ms: int) -> Call[bool]:
    """Take `lock` when free or renew it when `me` holds it; replies whether `me` holds it."""
    return Call("hold", [lock], [me, ttl_ms], lambda reply: bool(int(reply)))


def prune_consumers(
    *, stream: str, group: str, min_idle_ms: int = 0, consumer: str = ""
) -> Call[int]:
    """Remove consumers holding nothing (only `consumer`, when given) that have been idle
    `min_idle_ms`; replies how many."""
    return Call("prune_consumers", [stream], [group, min_idle_ms, consumer], as_int)
