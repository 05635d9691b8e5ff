"""Changes of one partner made at the same time all land: each is saved only over the record
it was made from (`lua/save_partner.lua`), so none overwrites another's field."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.models import PartnerPatch
from notifier.redis.connection import connect
from notifier.store import Store
from tests.helpers import register

#: One field each for eight clients, and the value of their n-th write.
FIELDS: dict[str, Any] = {
    "name": lambda n: f"name-{n}",
    "url": lambda n: f"https://example.com/hook/{n}",
    "events": lambda n: [f"order.e{n}"],
    "rate_limit": lambda n: f"{n + 1}/second",
    "max_in_flight": lambda n: n + 1,
    "headers": lambda n: {"x-n": str(n)},
    "ordered": lambda n: n % 2 == 1,
    "transform": lambda n: {"omit": [f"data.f{n}"]},
}
WRITES = 40


async def test_concurrent_patches_of_different_fields_each_keep_their_last_write(
    redis: Redis, settings: Settings
) -> None:
    pid, _ = await register(redis, settings, "p", "https://example.com/hook", ["order.created"])
    clients = [connect(settings, f"writer-{n}") for n in range(len(FIELDS))]
    try:

        async def writer(client: Redis, field: str) -> None:
            store = Store(client, settings)
            for n in range(WRITES):
                patch = msgspec.convert({field: FIELDS[field](n)}, PartnerPatch)
                await store.update(pid, patch)

        await asyncio.gather(*(writer(c, f) for c, f in zip(clients, FIELDS, strict=True)))
    finally:
        for client in clients:
            await client.aclose()
    final = msgspec.to_builtins(await Store(redis, settings).get(pid))
    for field, value in FIELDS.items():
        expected = msgspec.to_builtins(msgspec.convert({field: value(WRITES - 1)}, PartnerPatch))
        assert final[field] == expected[field], field


async def test_a_rotation_racing_a_410_disable_keeps_both(redis: Redis, settings: Settings) -> None:
    """notifier disables a partner on a 410 while an operator rotates its secret: once this
    lost the rotation (signatures failed with nothing pointing at the cause) or undid the
    disable."""
    store = Store(redis, settings)
    other = Store(connect(settings, "disabler"), settings)
    try:
        for round_ in range(10):
            pid, _ = await register(redis, settings, f"p{round_}", "https://x.example", ["*"])
            secret, _ = await asyncio.gather(
                store.rotate_secret(pid),
                other.disable(pid, "endpoint answered 410 Gone"),
            )
            partner = await store.get(pid)
            assert not partner.enabled and partner.disabled_reason == "endpoint answered 410 Gone"
            assert store.box.open(partner.secrets[0].value) == secret
            assert len(partner.secrets) == 2  # the old one overlaps
            shard = settings.keyspace().shard_of(pid)
            assert await redis.sismember(shard.disabled, pid)
    finally:
        await other.redis.aclose()
