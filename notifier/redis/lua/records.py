"""The builders of the scripts that change a partner's record: `save_partner.lua` (a change
that is saved only if the record is still the one read) and `remove_partner.lua`."""

from __future__ import annotations

from typing import Any

import msgspec

from notifier.redis import keys
from notifier.redis.keys import Shard
from notifier.redis.lua.scripts import Call


class Saved(msgspec.Struct, frozen=True):
    saved: bool  # False: the record changed since it was read; read it again
    woke: bool  # a delivery process is to be roused


def _saved(reply: Any) -> Saved:
    return Saved(bool(int(reply[0])), bool(int(reply[1])))


def save_partner(
    *,
    shard: Shard,
    partner_id: str,
    expected: bytes,
    record: bytes,
    enabled: bool,
    enabling: bool,
    now_ms: int,
) -> Call[Saved]:
    """Save `record` if the stored one is still `expected` (b"" for a new partner)."""
    partner = shard.partner(partner_id)
    return Call(
        "save_partner",
        [
            shard.partners,
            shard.changes,
            shard.disabled,
            shard.ready,
            shard.leases,
            partner.stream,
            partner.failing,
            partner.breaker,
        ],
        [
            partner_id,
            expected,
            record,
            "1" if enabled else "0",
            "1" if enabling else "0",
            now_ms,
            keys.PARTNER_CHANGES_KEPT,
        ],
        _saved,
    )


def remove_partner(*, shard: Shard, partner_id: str) -> Call[bool]:
    """Remove a partner and all its keys; replies whether it existed."""
    return Call(
        "remove_partner",
        [
            shard.partners,
            shard.changes,
            shard.disabled,
            shard.ready,
            shard.leases,
            *shard.partner(partner_id).all(),
        ],
        [partner_id, keys.PARTNER_CHANGES_KEPT],
        lambda reply: bool(int(reply)),
    )
