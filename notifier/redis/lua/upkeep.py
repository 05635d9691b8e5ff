"""The builders of the scripts outside the delivery loop: waking partners (`wake.lua`,
`rouse.lua`), sending a message again (`resend.lua`), the lock of one process (`hold.lua`),
forgetting the reports of stopped processes (`forget_reports.lua`) and pruning consumer groups
(`prune_consumers.lua`)."""

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
    woke: bool  # a delivery process is to be roused
    #: Per message, its new entry in the partner stream; None when neither the index (nor the
    #: dead letter a replay named) has it for this partner.
    entries: list[str | None]
    #: a replay's dead letter is gone: another replay took it
    taken: bool = False


def _resent(reply: Any) -> Resent:
    if len(reply) == 2 and isinstance(reply[1], int) and reply[1] == -2:
        return Resent(False, [None], taken=True)
    entries = [None if isinstance(e, int) else e.decode() for e in reply[1:]]
    return Resent(bool(int(reply[0])), entries)


def resend(
    *,
    shard: Shard,
    partner_id: str,
    message_ids: Sequence[str],
    now_ms: int,
    retention_ms: int,
    dead_letter: str = "",
) -> Call[Resent]:
    """Send messages to a partner again, same webhook-id, fresh schedule, each as the index
    (kept for `retention_ms`) knows it for this partner. A replay names the `dead_letter` (in
    the shard's dead letters) it takes, with its one message: one replay of it at a time
    succeeds, and it brings its own copy of the message when the index has none."""
    partner = shard.partner(partner_id)
    return Call(
        "resend",
        [
            partner.stream,
            partner.due,
            partner.inflight,
            partner.history,
            shard.dead,
            shard.ready,
            shard.leases,
            partner.spared,
        ],
        [
            keys.DELIVERY_GROUP,
            partner_id,
            now_ms,
            shard.home,
            keys.ids_generation_ms(retention_ms),
            retention_ms,
            dead_letter,
            *message_ids,
        ],
        _resent,
    )


def hold(*, lock: str, me: str, ttl_ms: int) -> Call[bool]:
    """Take `lock` when free or renew it when `me` holds it; replies whether `me` holds it."""
    return Call("hold", [lock], [me, ttl_ms], lambda reply: bool(int(reply)))


def forget_reports(*, stale: Sequence[tuple[bytes, bytes]]) -> Call[int]:
    """Remove the reports in `notifier:processes` read as stale, (name, report) pairs, each
    unless its process has reported again since; replies how many."""
    return Call("forget_reports", [keys.PROCESSES], [x for pair in stale for x in pair], as_int)


def prune_consumers(
    *, stream: str, group: str, min_idle_ms: int = 0, consumer: str = ""
) -> Call[int]:
    """Remove consumers holding nothing (only `consumer`, when given) that have been idle
    `min_idle_ms`; replies how many."""
    return Call("prune_consumers", [stream], [group, min_idle_ms, consumer], as_int)
