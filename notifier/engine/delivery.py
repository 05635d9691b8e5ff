"""The delivery pool: lease partners with work, serve each for a quantum, give it back.

Idle partners cost nothing: only partners in a shard's `ready` whose score has come are leased
(`lua/lease.lua`), so a process does O(log n) work per look whatever the number of partners,
and a process with nothing to do blocks on `notifier:wake` until a shard has a partner due: a
token names the shard. Every process serves every shard, the due ones in turn. Each leased
partner becomes a `ServedPartner` (`served.py`); taking partners in score order is
round-robin among the due ones, so a partner with a huge backlog, a rate limit or a hanging
endpoint only ever spends its own slots.

What a served partner could not give back while Redis was away (outcomes, its release, the
messages of a take whose reply was lost), and the partners of a lease call whose reply was
lost, are handed back by the next tick once Redis answers, instead of waiting
NOTIFIER_CLAIM_IDLE for leases and visibility timeouts to run out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import logs, ops
from notifier.config import Settings
from notifier.crypto import SecretBox
from notifier.engine.context import ServeContext
from notifier.engine.sender import Sender
from notifier.engine.served import SETTLE_MS, ServedPartner
from notifier.models import now_ms
from notifier.redis import keys, lua
from notifier.redis.connection import (
    REDIS_ERRORS,
    consumer_name,
    keep_running,
    until_stopped,
)
from notifier.redis.lua import Scripts
from notifier.store import Store
from notifier.telemetry import Telemetry

log = logs.get("delivery")

#: The longest an idle process blocks for a wake-up before looking at `ready` again.
FALLBACK = 2.0
#: Partners leased per look at `ready`: small steps spread them over the delivery processes.
LEASE_STEP = 4
#: Above this share of one CPU, a process takes no more partners (see `tick`)...
CPU_BUSY = 0.9
CPU_SAMPLE = 0.25
#: ...unless a partner has been due this long: then no other process is taking it. An idle
#: process takes a partner within a millisecond or two of its wake-up token, so waiting longer
#: only adds to a lone process's latency (at 50 ms it was most of the p99 under load).
STARVED_MS = 10
#: How long a saturated process waits before it looks again.
BUSY_WAIT = 0.01
#: Tries at giving a partner back while Redis answers errors for it, before leaving its lease
#: to run out.
GIVE_BACK_TRIES = 3


class DeliveryPool:
    def __init__(
        self, redis: Redis, settings: Settings, sender: Sender, telemetry: Telemetry | None = None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.sender = sender
        self.telemetry = telemetry or Telemetry.disabled()
        self.keyspace = settings.keyspace()
        self.store = Store(redis, settings)
        self.scripts = Scripts(redis)
        self.box = SecretBox(settings.secret_key)
        self.consumer = consumer_name(settings.consumer)
        self.lease_ms = int(settings.claim_idle * 1000)
        self.visible_ms = int(settings.claim_idle * 1000)
        self.stopping = asyncio.Event()
        self._serving: set[asyncio.Task[None]] = set()
        #: Served partners that could not be given back while Redis was away.
        self._unreturned: list[ServedPartner] = []
        #: Lease calls whose replies were lost (shard, lease end): their partners go back.
        self._lost_leases: list[tuple[int, int]] = []
        #: Per shard, the ms it next has a partner due (0: look now; None: nothing known).
        self._due: list[int | None] = [0] * len(self.keyspace.shards)
        self._turn = 0
        #: Blocked on the wake-up list right now.
        self._waiting = False
        #: Partners this process has served: it leaves their consumer groups when it stops.
        self._served_ids: set[str] = set()
        #: Operational events on their way (see `report`).
        self._reports: set[asyncio.Task[None]] = set()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._busy = 0.0
        #: How blocked waits for work ended: a wake-up `token`, the `timer` of a known due time,
        #: or the `fallback` (which should catch nothing).
        self.wakeups: Counter[str] = Counter()
        self.context = ServeContext(
            redis=redis,
            settings=settings,
            keyspace=self.keyspace,
            scripts=self.scripts,
            sender=sender,
            store=self.store,
            box=self.box,
            metrics=self.telemetry.metrics,
            consumer=self.consumer,
            lease_ms=self.lease_ms,
            visible_ms=self.visible_ms,
            open_ms=int(settings.request_timeout * 1000) + SETTLE_MS,
            stopping=self.stopping,
            report=self.report,
            unreturned=self._unreturned.append,
            rouse=self.rouse,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then let open requests finish and give every partner back."""
        stop_watch = asyncio.create_task(self._stop_on(stop))
        try:
            await keep_running("delivery", self.tick, stop)
        finally:
            stop_watch.cancel()
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)
        try:
            await self.give_back_unreturned()
            await self._leave_groups()
        except REDIS_ERRORS as exc:
            log.warning(
                "could not give partners back before stopping; their leases and "
                "messages expire after NOTIFIER_CLAIM_IDLE",
                partners=len(self._unreturned),
                error=str(exc),
            )

    async def _leave_groups(self) -> None:
        """Remove this process's consumer from the groups of the partner streams it served,
        where it holds nothing, so stopped processes do not pile up in them."""
        calls = [
            self.scripts.send(
                lua.prune_consumers(
                    stream=self.keyspace.partner(pid).stream,
                    group=keys.DELIVERY_GROUP,
                    consumer=self.consumer,
                )
            )
            for pid in self._served_ids
        ]
        await asyncio.gather(*calls)

    async def _stop_on(self, stop: asyncio.Event) -> None:
        """The pool's own event (its served partners hold it) is set when `stop` is."""
        await stop.wait()
        self.stopping.set()

    async def tick(self) -> None:
        if self._unreturned or self._lost_leases:
            await self.give_back_unreturned()
        if self._cpu_busy() > CPU_BUSY and self._serving and not await self._starved():
            # Saturated: more partners here would only share this CPU. Leave them (and the
            # wake-up tokens) to another delivery process, which is how adding processes
            # adds throughput. A partner left due for STARVED_MS has found no other taker (a
            # lone process, or all of them saturated), so it is served here after all: the
            # guard spreads work, it must not make partners wait for nothing.
            await asyncio.sleep(BUSY_WAIT)
            return
        free = min(self.settings.concurrency - len(self._serving), LEASE_STEP)
        if free <= 0:
            await asyncio.wait(self._serving, return_when=asyncio.FIRST_COMPLETED)
            return
        now = now_ms()
        shard = self._next_shard(now)
        if shard is None:
            await self._idle(now)
            return
        lease_until = now + self.lease_ms
        try:
            leased = await self.scripts.send(
                lua.lease(
                    shard=self.keyspace.shards[shard],
                    now_ms=now,
                    lease_until=lease_until,
                    count=free,
                )
            )
        except BaseException:
            self._lost_leases.append((shard, lease_until))
            raise
        for partner_id, record in leased.partners:
            self._served_ids.add(partner_id)
            served = ServedPartner(self.context, partner_id, record, lease_until)
            task = asyncio.create_task(served.run())
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        # Fewer than asked for: nothing else of the shard is due now, so wait for what comes
        # next rather than ask again (at a low rate, a lease finding nothing after each one
        # that found the event's partner was a round trip per event).
        self._due[shard] = now if len(leased.partners) >= free else leased.next_due_ms

    def _next_shard(self, now: int) -> int | None:
        """The next shard with a partner due, in turn from the last one leased."""
        count = len(self._due)
        for step in range(count):
            n = (self._turn + step) % count
            due = self._due[n]
            if due is not None and due <= now:
                self._turn = (n + 1) % count
                return n
        return None

    async def _idle(self, now: int) -> None:
        """Nothing known due: wait for a token, the earliest known due time, or the fallback,
        after which every shard is looked at again."""
        known = [due for due in self._due if due is not None]
        wait = (min(known) - now) / 1000 if known else FALLBACK
        token = await self._wait_for_work(
            min(wait, FALLBACK), "timer" if wait < FALLBACK else "fallback"
        )
        if token is not None:
            if token < len(self._due):
                self._due[token] = 0
        elif wait >= FALLBACK:
            self._due = [0] * len(self._due)

    async def _wait_for_work(self, seconds: float, why: str) -> int | None:
        """Block on `notifier:wake` until a shard has a partner due (a token: its number) or
        `seconds` pass: the time the earliest known partner is due (`timer`), or the bounded
        `fallback` that catches a lost token. Idle, that is one Redis call per FALLBACK seconds
        and a lease per shard."""
        self._waiting = True
        try:
            token = await until_stopped(
                self.stopping, self.redis.blpop([keys.WAKE], timeout=max(seconds, 0.001))
            )
        finally:
            self._waiting = False
        if self.stopping.is_set():
            return None
        self.wakeups[why if token is None else "token"] += 1
        if token is None:
            return None
        value = token[1]
        return int(value) if value.isdigit() else 0

    def rouse(self, shard: int) -> None:
        """A shard has a partner due now: look at it on the next tick. A token goes on the
        wake-up list only when this process will not look at once (it is blocked waiting for
        work, saturated, or stopping), for itself or another; sent with this process's next
        round trip, not waited for (one lost with a connection is caught by the fallback)."""
        self._due[shard] = 0
        busy = len(self._serving) >= self.settings.concurrency or self._cpu_busy() > CPU_BUSY
        if not (self._waiting or busy or self.stopping.is_set()):
            return
        token = self.scripts.send(lua.rouse(shards=[shard]))
        token.add_done_callback(_ignore)

    def report(self, event_type: str, data: dict[str, Any]) -> None:
        """Emit an operational event without making the caller wait for Redis."""
        task = asyncio.create_task(ops.emit(self.redis, event_type, data))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def give_back_unreturned(self) -> None:
        """Record and release what served partners could not while Redis was away, and the
        partners of lost lease calls; raises (keeping the rest) if Redis is still away."""
        while self._lost_leases:
            shard, lease_until = self._lost_leases[0]
            given = await self.scripts.send(
                lua.unlease(
                    shard=self.keyspace.shards[shard], now_ms=now_ms(), lease_until=lease_until
                )
            )
            if given:
                self.rouse(shard)
            self._lost_leases.pop(0)
        if not self._unreturned:
            return
        # all at once: after an outage, one round trip gives every partner back
        waiting = list(self._unreturned)
        results = await asyncio.gather(*(s.give_back() for s in waiting), return_exceptions=True)
        failed: BaseException | None = None
        for served, result in zip(waiting, results, strict=True):
            if isinstance(result, rx.ResponseError):
                # Redis answers, but not for this partner (a key of the wrong type, say): one
                # broken partner must not hold up every other. Its lease runs out instead.
                served.give_back_failures += 1
                if served.give_back_failures < GIVE_BACK_TRIES:
                    failed = failed or result
                    continue
                log.error(
                    "could not give a partner back; its lease expires after NOTIFIER_CLAIM_IDLE",
                    partner=served.partner_id,
                    error=str(result),
                )
            elif isinstance(result, BaseException):
                failed = failed or result
                continue
            else:
                log.info("partner given back", partner=served.partner_id)
            self._unreturned.remove(served)
        if failed is not None:
            raise failed

    async def _starved(self) -> bool:
        """Whether the earliest due partner of a shard has been due for STARVED_MS or more."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keyspace.shards:
                pipe.zrange(shard.ready, 0, 0, withscores=True)
            firsts = await pipe.execute()
        starved = now_ms() - STARVED_MS
        return any(first and float(first[0][1]) <= starved for first in firsts)

    def _cpu_busy(self) -> float:
        """The share of wall time this process spent on CPU since about CPU_SAMPLE ago.

        The process's CPU clock is read only once a sample is due: it is a system call (not
        the vDSO the monotonic clock uses), and a busy process ticks thousands of times a
        second; reading it every tick was 3 % of a delivery process's CPU under py-spy."""
        wall = time.monotonic()
        if wall - self._cpu_mark[0] >= CPU_SAMPLE:
            cpu = time.process_time()
            last_wall, last_cpu = self._cpu_mark
            self._busy = (cpu - last_cpu) / (wall - last_wall)
            self._cpu_mark = (wall, cpu)
        return self._busy


def _ignore(done: asyncio.Future[Any]) -> None:
    """Retrieve a fire-and-forget call's outcome, so a failed one is not reported as lost."""
    if not done.cancelled():
        done.exception()
