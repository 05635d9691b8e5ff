"""The router: ingress stream -> one entry in the stream of every subscribed partner.

It reads the ingress stream through the `router` consumer group in batches. Small fan-outs
go up to BATCH_ENTRIES at a time through `lua/route_batch.lua`, large ones (split in chunks of
FANOUT_CHUNK partners) and dead letters through `lua/route.lua`, all of a batch in one
pipeline: either script fans an entry out, dedupes the producer's id and acknowledges it in
one atomic step, so one script call carries many deliveries' routing. Entries left pending by
a router that died are claimed after NOTIFIER_CLAIM_IDLE; the scripts' XACK check keeps them
from being routed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import events, logs, ops
from notifier.config import Settings
from notifier.models import Message, Partner, decode_partner, iso_ms
from notifier.redis import keys, lua
from notifier.redis.connection import (
    TRANSIENT,
    consumer_name,
    is_nogroup,
    keep_running,
    until_stopped,
)
from notifier.redis.lua import Scripts
from notifier.store import Store
from notifier.subscriptions import Subscriptions
from notifier.telemetry import Telemetry, traces

log = logs.get("router")

BATCH = 200
#: An idle router waits this long per read; a stop interrupts it.
BLOCK_MS = 4000
#: Partners per route call: a larger fan-out is split, so no call holds Redis for long.
FANOUT_CHUNK = 100
#: Whole entries that share one route call at most.
BATCH_ENTRIES = 50
#: An entry handed to routers this many times without being routed is dead-lettered.
MAX_ROUTE_TRIES = 5
#: How often one router removes the consumers stopped processes left, and after how long idle.
JANITOR_EVERY = 3600.0
SECRET_CHECK_EVERY = 300.0
CONSUMER_IDLE_MS = 3_600_000
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
        self.telemetry = telemetry or Telemetry.disabled()
        self.tracer = self.telemetry.tracer
        self.scripts = Scripts(redis)
        self.ops = ops
        self.stream = keys.OPS if ops else settings.ingress_stream
        self.consumer = consumer_name(settings.consumer)
        self.subscriptions = Subscriptions()
        #: The last entry of the partner change log applied to `subscriptions`.
        self._cursor: bytes | None = None
        self._next_claim = 0.0
        self._own_pending_done = False
        self._group_ready = False
        self._next_janitor = 0.0
        self._next_secret_check = 0.0
        self._stop = asyncio.Event()

    async def ensure_group(self) -> None:
        try:
            # From 0, so events published before the first router started are routed too.
            await self.redis.xgroup_create(self.stream, keys.ROUTER_GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await keep_running("router", self._run_once, stop, on_nogroup=self.ensure_group)
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
                await self._janitor()
                await self._secrets_expiring()
        except BaseException:
            # What this router read but did not route is pending under its name: read it
            # again first, rather than leave it for XAUTOCLAIM after NOTIFIER_CLAIM_IDLE.
            self._own_pending_done = False
            raise

    async def step(self) -> int:
        """Route one batch; returns how many entries it handled."""
        entries, recovered = await self._next_batch()
        if recovered:
            entries = await self._drop_poison(entries)
        if entries:
            await self.route(entries)
        return len(entries)

    async def _janitor(self) -> None:
        """Once an hour, one router of the deployment (whichever takes the lock) removes the
        consumers that stopped processes left in the consumer groups, when they hold nothing
        and have been idle for CONSUMER_IDLE: a process that crashed could not remove its own
        (one stopped gracefully does, at once)."""
        now = time.monotonic()
        if now < self._next_janitor:
            return
        self._next_janitor = now + JANITOR_EVERY
        if not await self.redis.set(keys.JANITOR, self.consumer, nx=True, ex=int(JANITOR_EVERY)):
            return
        await self.refresh_partners()
        groups = [(self.stream, keys.ROUTER_GROUP), (keys.OPS, keys.ROUTER_GROUP)] + [
            (keys.stream(pid), keys.DELIVERY_GROUP) for pid in self.subscriptions.ids()
        ]
        removed = 0
        for start in range(0, len(groups), 500):
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, group in groups[start : start + 500]:
                    await self.scripts.queue(
                        pipe,
                        lua.prune_consumers(
                            stream=stream, group=group, min_idle_ms=CONSUMER_IDLE_MS
                        ),
                    )
                removed += sum(int(n) for n in await pipe.execute())
        if removed:
            log.info("removed consumers of stopped processes", count=removed)

    async def _secrets_expiring(self) -> None:
        """Every few minutes: announce each rotated-out secret that ends within the hour, once
        (a marker per secret, so many routers announce it once between them)."""
        now = time.monotonic()
        if now < self._next_secret_check:
            return
        self._next_secret_check = now + SECRET_CHECK_EVERY
        await self.refresh_partners()
        wall = int(time.time() * 1000)
        for partner in self.subscriptions.partners():
            for secret in partner.secrets:
                ends = secret.expires_ms
                if ends is None or not wall < ends <= wall + ops.SECRET_WARNING_MS:
                    continue
                if await self.redis.set(keys.expiring(partner.id, ends), 1, nx=True, ex=7200):
                    await ops.emit(
                        self.redis,
                        ops.SECRET_EXPIRING,
                        {"partner": partner.id, "name": partner.name, "expires_at": iso_ms(ends)},
                    )

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

    async def _drop_poison(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter the entries that were handed out MAX_ROUTE_TRIES times already: whatever
        stops a router on them (a crash, a kill by the OOM killer) would stop the next one."""
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
        for entry_id, fields in entries:
            count = tries.get(entry_id, 0)
            if count < MAX_ROUTE_TRIES:
                kept.append((entry_id, fields))
                continue
            reason = f"routing failed {count} times (a router stopped while handling it)"
            log.warning("poison event dead-lettered", entry_id=entry_id.decode(), reason=reason)
            await self.scripts.run(self._dead_call(entry_id.decode(), fields, reason))
            self.telemetry.metrics.dead_lettered("", "poison")
        return kept

    async def refresh_partners(self) -> Subscriptions:
        """Bring the index of subscriptions up to date: reload only the partners that changed
        since the last look (two cheap reads when none did), or all of them when the change
        log no longer reaches back that far or Redis lost its data."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(keys.PARTNER_CHANGES, count=1)
            pipe.xrange(keys.PARTNER_CHANGES, count=1)
            newest, oldest = await pipe.execute()
        latest = newest[0][0] if newest else None
        first = oldest[0][0] if oldest else None
        if (
            self._cursor is None
            or (latest is None and self._cursor != b"0-0")
            or (first is not None and _later(first, self._cursor))
        ):
            await self._load_all()
        elif latest is not None and _later(latest, self._cursor):
            changes = await self.redis.xrange(
                keys.PARTNER_CHANGES, min=b"(" + self._cursor, count=keys.PARTNER_CHANGES_KEPT
            )
            ids = list(dict.fromkeys(fields[b"id"] for _, fields in changes))
            records = await self.redis.hmget(keys.PARTNERS, ids) if ids else []
            for pid, record in zip(ids, records, strict=True):
                self._put(pid, record)
            self._cursor = changes[-1][0] if changes else self._cursor
        return self.subscriptions

    async def _load_all(self) -> None:
        # The cursor is read before the partners, so a change made in between is applied
        # again on the next look rather than missed.
        newest = await self.redis.xrevrange(keys.PARTNER_CHANGES, count=1)
        raw = await self.redis.hgetall(keys.PARTNERS)
        self.subscriptions = Subscriptions()
        for pid, record in raw.items():
            self._put(pid, record)
        self._cursor = newest[0][0] if newest else b"0-0"
        log.info("partners loaded", partners=len(self.subscriptions))

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

    async def route(self, entries: list[Entry]) -> None:
        """Fan a batch out in one pipeline. No entry can stop the batch: one that cannot be
        planned or whose script fails is dead-lettered with the reason, and the rest go on.

        Whole entries with small fan-outs share script calls (`lua/route_batch.lua`, a few
        dozen a call); dead letters and fan-outs split in chunks go one call each."""
        subscriptions = await self.refresh_partners()
        now_ms = int(time.time() * 1000)
        spans = []
        planned: list[Planned] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            try:
                parsed = events.parse(entry_id, fields, self.settings.max_event_bytes, own=self.ops)
                if isinstance(parsed, str):
                    log.warning("malformed event dead-lettered", entry_id=entry_id, reason=parsed)
                    planned.append(self._dead(raw_id, fields, parsed, now_ms))
                    continue
                targets = subscriptions.targets(parsed.type)
                if self.tracer is not None:
                    producer = fields.get(b"traceparent", b"").decode(errors="replace")
                    span = traces.route_span(self.tracer, parsed, len(targets), producer)
                    parsed.trace = traces.traceparent(span)
                    spans.append(span)
                planned.append(self._plan(raw_id, fields, parsed, targets, b"id" in fields, now_ms))
            except Exception as exc:  # a bug meeting a hostile entry must not stop routing
                reason = f"could not be routed: {type(exc).__name__}: {exc}"[:500]
                log.exception("event dead-lettered", entry_id=entry_id, reason=reason)
                planned.append(self._dead(raw_id, fields, reason, now_ms))
        units = self._units(planned, now_ms)
        async with self.redis.pipeline(transaction=False) as pipe:
            for unit in units:
                # queued on the pipeline: awaiting it returns at once, the batch runs on execute
                await self.scripts.queue(pipe, unit[1])
            replies = await pipe.execute(raise_on_error=False)
        for (members, _), reply in zip(units, replies, strict=True):
            if isinstance(reply, rx.ResponseError) and not is_nogroup(reply):
                # This call failed on its own (the rest of the batch is routed): its entries
                # go again one by one, and one that fails alone is dead-lettered.
                for member in members:
                    await self._alone(member, now_ms)
            elif isinstance(reply, Exception):
                raise reply
            else:
                for member, count in zip(
                    members, reply if isinstance(reply, list) else [reply], strict=True
                ):
                    await self._count(member, count)
        for span in spans:
            span.end()

    def _plan(
        self,
        raw_id: bytes,
        fields: dict[bytes, bytes],
        message: Message,
        targets: list[Partner],
        dedupe: bool,
        now_ms: int,
    ) -> Planned:
        entry_id = raw_id.decode()
        if len(targets) > FANOUT_CHUNK:
            return Planned(
                raw_id,
                fields,
                message.type,
                None,
                self._route_calls(entry_id, message, targets, dedupe, now_ms),
            )
        routing = lua.Routing(
            entry_id=entry_id,
            message=_message_encoder.encode(message),
            message_id=message.id,
            dedupe_ttl=keys.DEDUPE_TTL if dedupe else 0,
            partners=[(p.id, p.enabled) for p in targets],
        )
        return Planned(raw_id, fields, message.type, routing, [])

    def _dead(self, raw_id: bytes, fields: dict[bytes, bytes], reason: str, now_ms: int) -> Planned:
        return Planned(
            raw_id,
            fields,
            "",
            None,
            [self._dead_call(raw_id.decode(), fields, reason, now_ms)],
            reason,
        )

    def _units(self, planned: list[Planned], now_ms: int) -> list[tuple[list[Planned], Any]]:
        """The calls to make, in order: runs of batchable entries share one, up to
        BATCH_ENTRIES entries or FANOUT_CHUNK partners a call."""
        units: list[tuple[list[Planned], Any]] = []
        run: list[Planned] = []

        def flush() -> None:
            if run:
                call = lua.route_batch(
                    ingress=self.stream,
                    group=keys.ROUTER_GROUP,
                    now_ms=now_ms,
                    entries=[p.routing for p in run if p.routing is not None],
                    retention_ms=int(self.settings.message_retention * 1000),
                    keep=self.ops,
                )
                units.append((list(run), call))
                run.clear()

        for plan in planned:
            if plan.routing is None:
                flush()
                # a split fan-out: its calls go in order; only the last one counts
                for n, call in enumerate(plan.calls):
                    last = n == len(plan.calls) - 1
                    units.append(([plan if last else plan.quiet()], call))
                continue
            partners = sum(len(p.routing.partners) for p in run if p.routing is not None)
            if len(run) >= BATCH_ENTRIES or partners + len(plan.routing.partners) > FANOUT_CHUNK:
                flush()
            run.append(plan)
        flush()
        return units

    async def _alone(self, plan: Planned, now_ms: int) -> None:
        """Route one entry on its own, after the call it shared failed; dead-letter it if it
        fails again."""
        calls = plan.calls
        if plan.routing is not None:
            calls = [self._routing_call(plan.routing, now_ms)]
        try:
            count = 0
            for call in calls:
                count = await self.scripts.run(call)
            await self._count(plan, count)
        except rx.ResponseError as exc:
            reason = f"routing failed: {exc}"[:500]
            log.error("event dead-lettered", entry_id=plan.raw_id.decode(), reason=reason)
            await self.scripts.run(
                self._dead_call(plan.raw_id.decode(), plan.fields, reason, now_ms)
            )
            await self._count(Planned(plan.raw_id, plan.fields, "", None, [], reason), 0)

    async def _count(self, plan: Planned, count: int) -> None:
        """Metrics and operational events of one routed entry (-1: another router did it)."""
        if count < 0 or plan.silent:
            return
        metrics = self.telemetry.metrics
        if plan.event_type:
            metrics.routed(plan.event_type)
            return
        metrics.dead_lettered("", "malformed")
        if not self.ops:
            await ops.emit(
                self.redis,
                ops.DEAD_LETTERED,
                {
                    "partner": None,
                    "entry_id": plan.raw_id.decode(),
                    "reason": plan.reason or "malformed",
                },
            )

    def _routing_call(self, routing: lua.Routing, now_ms: int) -> lua.Call[int]:
        return lua.route(
            ingress=self.stream,
            group=keys.ROUTER_GROUP,
            entry_id=routing.entry_id,
            now_ms=now_ms,
            message=routing.message,
            partners=routing.partners,
            event_id=routing.message_id,
            dedupe_ttl=routing.dedupe_ttl,
            retention_ms=int(self.settings.message_retention * 1000),
            keep=self.ops,
        )

    def _route_calls(
        self, entry_id: str, message: Message, targets: list[Partner], dedupe: bool, now_ms: int
    ) -> list[lua.Call[int]]:
        """One call, or one per FANOUT_CHUNK partners of a large fan-out: a single script
        appending to a thousand streams would hold Redis for milliseconds."""
        payload = _message_encoder.encode(message)
        pairs = [(p.id, p.enabled) for p in targets]
        chunks = [pairs[i : i + FANOUT_CHUNK] for i in range(0, len(pairs), FANOUT_CHUNK)] or [[]]
        return [
            lua.route(
                ingress=self.stream,
                group=keys.ROUTER_GROUP,
                entry_id=entry_id,
                now_ms=now_ms,
                message=payload,
                partners=chunk,
                event_id=message.id,
                dedupe_ttl=keys.DEDUPE_TTL if dedupe else 0,
                retention_ms=int(self.settings.message_retention * 1000),
                keep=self.ops,
                chunk=n,
                last=n == len(chunks) - 1,
            )
            for n, chunk in enumerate(chunks)
        ]

    def _dead_call(
        self, entry_id: str, fields: dict[bytes, bytes], reason: str, now_ms: int | None = None
    ) -> lua.Call[int]:
        return lua.route(
            ingress=self.stream,
            group=keys.ROUTER_GROUP,
            entry_id=entry_id,
            now_ms=now_ms or int(time.time() * 1000),
            dead_reason=reason,
            entry=events.describe(fields),
            keep=self.ops,
        )


@dataclass
class Planned:
    """What routing one entry takes: a `routing` to share a call with other entries, or its
    own `calls` (a dead letter, a fan-out split in chunks)."""

    raw_id: bytes
    fields: dict[bytes, bytes]
    event_type: str  # "" for a dead letter
    routing: lua.Routing | None
    calls: list[lua.Call[int]]
    reason: str = ""
    silent: bool = False  # a chunk before the last: the entry counts once, at its end

    def quiet(self) -> Planned:
        return Planned(self.raw_id, self.fields, self.event_type, None, [], self.reason, True)


def _later(a: bytes, b: bytes) -> bool:
    """Whether stream id `a` comes after `b`."""
    ams, _, aseq = a.partition(b"-")
    bms, _, bseq = b.partition(b"-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


def _entries(reply: Any) -> list[Entry]:
    if not reply:
        return []
    return [(eid, fields) for eid, fields in reply[0][1] if fields]
