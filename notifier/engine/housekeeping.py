"""What one lane of a router process does besides routing: remove the consumers stopped
processes left in the consumer groups and the generations of producer ids past the retention,
and announce rotated-out secrets about to expire."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from notifier import logs, ops
from notifier.models import iso_ms, now_ms
from notifier.redis import keys, lua

if TYPE_CHECKING:
    from notifier.engine.router import Router

log = logs.get("router")

#: How often one router removes the consumers stopped processes left, and after how long idle.
JANITOR_EVERY = 3600.0
CONSUMER_IDLE_MS = 3_600_000
SECRET_CHECK_EVERY = 300.0


class Housekeeping:
    def __init__(self, router: Router) -> None:
        self.router = router
        self._next_janitor = 0.0
        self._next_secret_check = 0.0

    async def run(self) -> None:
        await self._janitor()
        await self._secrets_expiring()

    async def _janitor(self) -> None:
        """Once an hour, one router of the deployment (whichever takes the lock) removes the
        consumers that stopped processes left in the consumer groups, when they hold nothing
        and have been idle for CONSUMER_IDLE: a process that crashed could not remove its own
        (one stopped gracefully does, at once)."""
        now = time.monotonic()
        if now < self._next_janitor:
            return
        self._next_janitor = now + JANITOR_EVERY
        router = self.router
        me = router.consumer
        if not await router.redis.set(keys.JANITOR, me, nx=True, ex=int(JANITOR_EVERY)):
            return
        subscriptions = await router.refresh_partners()
        groups = [(router.stream, keys.ROUTER_GROUP), (keys.OPS, keys.ROUTER_GROUP)] + [
            (router.keyspace.partner(pid).stream, keys.DELIVERY_GROUP)
            for pid in subscriptions.ids()
        ]
        removed = 0
        for start in range(0, len(groups), 500):
            calls = [
                router.scripts.send(
                    lua.prune_consumers(stream=stream, group=group, min_idle_ms=CONSUMER_IDLE_MS)
                )
                for stream, group in groups[start : start + 500]
            ]
            for call in calls:
                removed += await call
        if removed:
            log.info("removed consumers of stopped processes", count=removed)
        await self._old_generations()

    async def _old_generations(self) -> None:
        """UNLINK the generations of producer ids that no look-up reads any more (past the
        retention): freed in the background, where their TTL, two hours later, would free
        hashes of up to a day's ids while Redis waits."""
        router = self.router
        if not router.retention_ms:
            return
        span = keys.ids_generation_ms(router.retention_ms)
        oldest = (int(time.time() * 1000) - router.retention_ms) // span  # the oldest read
        for home in router.keyspace.homes:  # a home's keys share a slot on a Cluster
            await router.redis.unlink(*(home.generation(g) for g in range(oldest - 3, oldest)))

    async def _secrets_expiring(self) -> None:
        """Every few minutes: announce each rotated-out secret that ends within the hour, once
        (a marker per secret, so many routers announce it once between them)."""
        now = time.monotonic()
        if now < self._next_secret_check:
            return
        self._next_secret_check = now + SECRET_CHECK_EVERY
        router = self.router
        subscriptions = await router.refresh_partners()
        wall = now_ms()
        for partner in subscriptions.partners():
            for secret in partner.secrets:
                ends = secret.expires_ms
                if ends is None or not wall < ends <= wall + ops.SECRET_WARNING_MS:
                    continue
                marker = router.keyspace.partner(partner.id).expiring(ends)
                if await router.redis.set(marker, 1, nx=True, ex=7200):
                    await ops.emit(
                        router.redis,
                        ops.SECRET_EXPIRING,
                        {"partner": partner.id, "name": partner.name, "expires_at": iso_ms(ends)},
                    )
