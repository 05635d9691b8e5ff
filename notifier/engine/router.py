"""The router: ingress stream -> one entry in the stream of every subscribed partner.

It reads the ingress stream through the `router` consumer group in batches, plans each entry's
fan-out shard by shard (`fanout.py`), sends every shard's `lua/route.lua` calls of the batch at
once, and acknowledges an entry only once each shard it goes to has it. A shard remembers each
message it was given, so an entry routed again (its router stopped before acknowledging it, or
another router claimed it meanwhile) appends nothing twice. Entries left pending by a router
that died are claimed after NOTIFIER_CLAIM_IDLE; an entry that stops routers again and again
is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import events, logs, ops
from notifier.catalog import Catalog
from notifier.config import Settings
from notifier.engine import fanout
from notifier.engine.fanout import EntryPlan
from notifier.engine.housekeeping import Housekeeping
from notifier.engine.partner_feed import PartnerFeed
from notifier.models import now_ms
from notifier.redis import keys, lua
from notifier.redis.connection import TRANSIENT, consumer_name, keep_running, until_stopped
from notifier.redis.lua import Scripts
from notifier.store import Store
from notifier.subscriptions import EventView, Subscriptions
from notifier.telemetry import Telemetry, traces

log = logs.get("router")

BATCH = 200
#: An idle router waits this long per read; a stop interrupts it.
BLOCK_MS = 4000
#: An entry handed to routers this many times without being routed is dead-lettered.
MAX_ROUTE_TRIES = 5
_message_encoder = msgspec.json.Encoder()

Entry = tuple[bytes, dict[bytes, bytes]]


class Router:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        telemetry: Telemetry | None = None,
        ops: bool = False,
    ) -> None:
        """A router of the ingress stream, or with `ops` of `notifier:ops`: notifier's own
        events, which keep their entries (operators read the stream) and may carry
        `notifier.*` types."""
        # Any: redis-py types every reply as bytes | str; this client always answers bytes
        self.redis: Any = redis
        self.settings = settings
        self.keyspace = settings.keyspace()
        self.telemetry = telemetry or Telemetry.disabled()
        self.tracer = self.telemetry.tracer
        self.scripts = Scripts(redis)
        self.ops = ops
        self.stream = keys.OPS if ops else settings.ingress_stream
        self.consumer = consumer_name(settings.consumer)
        # the event types' schemas (none for notifier's own events), followed with the partners
        self.catalog = Catalog(off=ops)
        self.feed = PartnerFeed(self.redis, self.keyspace, self.catalog)
        self.housekeeping = Housekeeping(self)
        #: How long a shard remembers a message without a producer id was routed: past the
        #: time another router takes to claim the entry of one that died.
        self.routed_ttl = int(2 * settings.claim_idle) + 60
        self.retention_ms = int(settings.message_retention * 1000)
        self._next_claim = 0.0
        self._own_pending_done = False
        self._group_ready = False
        self._stop = asyncio.Event()

    @property
    def subscriptions(self) -> Subscriptions:
        return self.feed.subscriptions

    async def refresh_partners(self) -> Subscriptions:
        return await self.feed.refresh()

    async def ensure_group(self) -> None:
        try:
            # From 0, so events published before the first router started are routed too.
            await self.redis.xgroup_create(self.stream, keys.ROUTER_GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        # a lane of its own in /healthz: under one name, a stuck lane hid behind the other
        lane = "router:ops" if self.ops else "router"
        await keep_running(lane, self._run_once, stop, on_nogroup=self.ensure_group)
        with contextlib.suppress(*TRANSIENT, rx.ResponseError):
            # Leave the group if this router holds nothing, rather than pile up names.
            await self.scripts.run(
                lua.prune_consumers(
                    stream=self.stream, group=keys.ROUTER_GROUP, consumer=self.consumer
                )
            )

    async def _run_once(self) -> None:
        if not self._group_ready:
            await self.ensure_group()
            if not self.ops:
                await Store(self.redis, self.settings).keep_ops_webhook()
            self._group_ready = True
        try:
            await self.step()
            if not self.ops:  # one lane of a router process keeps house
                await self.housekeeping.run()
        except BaseException:
            # What this router read but did not route is pending under its name: read it
            # again first, rather than leave it for XAUTOCLAIM after NOTIFIER_CLAIM_IDLE.
            self._own_pending_done = False
            raise

    async def step(self) -> int:
        """Route one batch; returns how many entries it handled."""
        entries, recovered = await self._next_batch()
        poison: list[EntryPlan] = []
        if recovered:
            entries, poison = await self._split_poison(entries)
        if entries or poison:
            await self.route(entries, poison)
        return len(entries) + len(poison)

    async def _next_batch(self) -> tuple[list[Entry], bool]:
        """The next entries, and whether they were read before (by this router or a dead one),
        so may be the ones that stopped it."""
        if not self._own_pending_done:
            # After a restart under the same consumer name, finish what we had read.
            reply = await self.redis.xreadgroup(
                keys.ROUTER_GROUP, self.consumer, {self.stream: "0"}, count=BATCH
            )
            entries = _entries(reply)
            if entries:
                return entries, True
            self._own_pending_done = True
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_idle / 2
            reply = await self.redis.xautoclaim(
                self.stream,
                keys.ROUTER_GROUP,
                self.consumer,
                min_idle_time=int(self.settings.claim_idle * 1000),
                count=BATCH,
            )
            claimed = [(eid, fields) for eid, fields in reply[1] if fields]
            if claimed:
                log.info("claimed entries of a stopped router", count=len(claimed))
                return claimed, True
        reply = await until_stopped(
            self._stop,
            self.redis.xreadgroup(
                keys.ROUTER_GROUP, self.consumer, {self.stream: ">"}, count=BATCH, block=BLOCK_MS
            ),
        )
        return _entries(reply), False

    async def _split_poison(self, entries: list[Entry]) -> tuple[list[Entry], list[EntryPlan]]:
        """The entries to route, and those handed out MAX_ROUTE_TRIES times already, to
        dead-letter: whatever stops a router on them (a crash, a kill by the OOM killer)
        would stop the next one."""
        first, last = entries[0][0], entries[-1][0]
        rows = await self.redis.xpending_range(
            self.stream,
            keys.ROUTER_GROUP,
            min=first,
            max=last,
            count=len(entries) + BATCH,
            consumername=self.consumer,
        )
        tries = {row["message_id"]: int(row["times_delivered"]) for row in rows}
        kept: list[Entry] = []
        poison: list[EntryPlan] = []
        for entry_id, fields in entries:
            count = tries.get(entry_id, 0)
            if count < MAX_ROUTE_TRIES:
                kept.append((entry_id, fields))
                continue
            reason = f"routing failed {count} times (a router stopped while handling it)"
            poison.append(EntryPlan(entry_id, fields, dead_reason=reason, dead_kind="poison"))
        return kept, poison

    async def route(self, entries: list[Entry], dead: list[EntryPlan] | None = None) -> None:
        """Route a batch. No entry can stop the batch: one that cannot be planned is
        dead-lettered with the reason, one whose call fails goes again on its own (and is
        dead-lettered if it fails again), and the rest go on."""
        subscriptions = await self.feed.refresh()
        now = now_ms()
        spans: list[Any] = []
        plans = [self._plan(raw_id, fields, subscriptions, spans) for raw_id, fields in entries]
        plans += dead or []
        await self._send(plans, now)
        for plan in plans:
            if not plan.complete():
                await self._alone(plan, now)
        done = [plan for plan in plans if plan.complete()]
        if done:
            await self.scripts.send(
                lua.ack(ingress=self.stream, entry_ids=[p.entry_id for p in done], keep=self.ops)
            )
            await self._forget(done)
        for plan in done:
            await self._count(plan)
        for span in spans:
            span.end()

    def _plan(
        self,
        raw_id: bytes,
        fields: dict[bytes, bytes],
        subscriptions: Subscriptions,
        spans: list[Any],
    ) -> EntryPlan:
        entry_id = raw_id.decode()
        try:
            parsed = events.parse(entry_id, fields, self.settings.max_event_bytes, own=self.ops)
            if isinstance(parsed, str):
                return EntryPlan(raw_id, fields, dead_reason=parsed)
            view = EventView(parsed)
            broken = self.catalog.problem(view)
            if broken:
                return EntryPlan(raw_id, fields, dead_reason=broken, dead_kind="schema")
            targets, filtered = subscriptions.targets(parsed.type, parsed.owner, view)
            if self.tracer is not None:
                producer = fields.get(b"traceparent", b"").decode(errors="replace")
                span = traces.route_span(self.tracer, parsed, len(targets), producer)
                parsed.trace = traces.traceparent(span)
                spans.append(span)
            ttl = self._marker_ttl(b"id" in fields)
            parts = fanout.split(
                self.keyspace, entry_id, parsed.id, _message_encoder.encode(parsed), ttl, targets
            )
            plan = EntryPlan(raw_id, fields, parsed.type, parts, outcomes=[None] * len(parts))
            plan.forget = ttl > 0 and b"id" not in fields
            plan.filtered = list(filtered)
            return plan
        except Exception as exc:  # a bug meeting a hostile entry must not stop routing
            reason = f"could not be routed: {type(exc).__name__}: {exc}"[:500]
            log.exception("event dead-lettered", entry_id=entry_id, reason=reason)
            return EntryPlan(raw_id, fields, dead_reason=reason)

    def _marker_ttl(self, producer_id: bool) -> int:
        """How long a shard's marker remembers a message was routed: 0 when the message
        index keeps it long enough (its fields say so, at no cost of their own); else as long
        as the producer-id dedupe lasts, or, with no producer id, until its entry is
        acknowledged (deleted then, kept past the time another router takes to claim the
        entry of one that died)."""
        needed = keys.DEDUPE_TTL if producer_id else self.routed_ttl
        return 0 if self.retention_ms >= needed * 1000 else needed

    async def _forget(self, done: list[EntryPlan]) -> None:
        by_shard: dict[int, list[str]] = {}
        for plan in done:
            if plan.forget:
                for shard, part in plan.parts:
                    by_shard.setdefault(shard.number, []).append(part.message_id)
        calls = [
            self.scripts.send(lua.forget(shard=self.keyspace.shards[n], message_ids=ids))
            for n, ids in by_shard.items()
        ]
        await asyncio.gather(*calls)

    async def _send(self, plans: list[EntryPlan], now_ms: int) -> None:
        """Send every call of the batch at once (the auto-pipeline carries them together) and
        record what each part came to. A call that fails on its own leaves its parts unknown,
        to go again one by one; Redis going away fails the batch, to be read again."""
        units = fanout.units(plans)
        dead = [plan for plan in plans if plan.dead_reason]
        calls: list[asyncio.Future[Any]] = [
            self.scripts.send(
                lua.route(
                    shard=unit.shard,
                    now_ms=now_ms,
                    parts=unit.parts(),
                    retention_ms=self.retention_ms,
                )
            )
            for unit in units
        ]
        calls += [self.scripts.send(self._dead_call(plan)) for plan in dead]
        replies = await asyncio.gather(*calls, return_exceptions=True)
        woken: set[int] = set()
        for unit, reply in zip(units, replies, strict=False):
            if isinstance(reply, TRANSIENT):
                raise reply
            if isinstance(reply, BaseException):
                log.error("route call failed; its entries go again one by one", error=str(reply))
                continue
            assert isinstance(reply, lua.Routed)
            if reply.woke:
                woken.add(unit.shard.number)
            for (plan, i), outcome in zip(unit.members, reply.parts, strict=True):
                plan.outcomes[i] = outcome
        for plan, reply in zip(dead, replies[len(units) :], strict=True):
            if isinstance(reply, TRANSIENT):
                raise reply
            if isinstance(reply, bool):
                plan.dead_written = reply
        if woken:
            await self.scripts.send(lua.rouse(shards=sorted(woken)))

    async def _alone(self, plan: EntryPlan, now_ms: int) -> None:
        """Route one entry's missing parts one call at a time, after a call it shared failed;
        dead-letter it if one fails again."""
        try:
            for i, (shard, part) in enumerate(plan.parts):
                if plan.outcomes[i] is None or plan.outcomes[i] == "gap":
                    call = lua.route(
                        shard=shard, now_ms=now_ms, parts=[part], retention_ms=self.retention_ms
                    )
                    reply = await self.scripts.run(call)
                    plan.outcomes[i] = reply.parts[0]
                    if reply.woke:
                        await self.scripts.send(lua.rouse(shards=[shard.number]))
            if plan.dead_reason:
                plan.dead_written = await self.scripts.run(self._dead_call(plan))
        except rx.ResponseError as exc:
            if plan.dead_reason:
                raise  # the dead letters themselves refuse it: nothing else to try
            plan.dead_reason = f"routing failed: {exc}"[:500]
            plan.dead_written = await self.scripts.run(self._dead_call(plan))

    async def _count(self, plan: EntryPlan) -> None:
        """Metrics, logs and operational events of one acknowledged entry, once: by the router
        that did its work. Told when planned instead, an entry read again (its batch failed,
        or another router claimed it) was counted again."""
        if not plan.fresh():
            return
        metrics = self.telemetry.metrics
        if not plan.dead_reason:
            metrics.routed(plan.event_type)
            metrics.filtered(plan.filtered)
            return
        log.warning(
            "event dead-lettered",
            entry_id=plan.entry_id,
            kind=plan.dead_kind,
            reason=plan.dead_reason,
        )
        metrics.dead_lettered("", plan.dead_kind)
        if not self.ops:
            await ops.emit(
                self.redis,
                ops.DEAD_LETTERED,
                {"partner": None, "entry_id": plan.entry_id, "reason": plan.dead_reason},
            )

    def _dead_call(self, plan: EntryPlan) -> lua.Call[bool]:
        return lua.dead_event(
            entry_id=plan.entry_id, reason=plan.dead_reason, entry=events.describe(plan.fields)
        )


def _entries(reply: Any) -> list[Entry]:
    if not reply:
        return []
    return [(eid, fields) for eid, fields in reply[0][1] if fields]
