"""The router: ingress stream -> one entry in the stream of every subscribed partner.

It reads the ingress stream through the `router` consumer group in batches and runs
`lua/route.lua` once per entry (all of a batch in one pipeline), which fans out, dedupes the
producer's id and acknowledges in one atomic step. Entries left pending by a router that died
are claimed after NOTIFIER_CLAIM_IDLE; the script's XACK check keeps them from being routed twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import events, keys, logs, telemetry
from notifier.config import Settings
from notifier.connection import consumer_name, keep_running
from notifier.models import Partner, decode_partner
from notifier.scripts import Scripts
from notifier.telemetry import Telemetry

log = logs.get("router")

BATCH = 200
BLOCK_MS = 1000
_message_encoder = msgspec.json.Encoder()

Entry = tuple[bytes, dict[bytes, bytes]]


class Router:
    def __init__(self, redis: Redis, settings: Settings,
                 telemetry: Telemetry | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.tracer = telemetry.tracer if telemetry else None
        self.scripts = Scripts(redis)
        self.stream = settings.ingress_stream
        self.consumer = consumer_name(settings.consumer)
        self._partners: list[Partner] = []
        self._version: Any = b"-"
        self._next_claim = 0.0
        self._own_pending_done = False
        self._group_ready = False

    async def ensure_group(self) -> None:
        try:
            # From 0, so events published before the first router started are routed too.
            await self.redis.xgroup_create(self.stream, keys.ROUTER_GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        await keep_running("router", self._run_once, stop, on_nogroup=self.ensure_group)

    async def _run_once(self) -> None:
        if not self._group_ready:
            await self.ensure_group()
            self._group_ready = True
        await self.step()

    async def step(self) -> int:
        """Route one batch; returns how many entries it handled."""
        entries = await self._next_batch()
        if entries:
            await self.route(entries)
        return len(entries)

    async def _next_batch(self) -> list[Entry]:
        if not self._own_pending_done:
            # After a restart under the same consumer name, finish what we had read.
            reply = await self.redis.xreadgroup(keys.ROUTER_GROUP, self.consumer,
                                                {self.stream: "0"}, count=BATCH)
            entries = _entries(reply)
            if not entries:
                self._own_pending_done = True
            return entries
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_idle / 2
            reply = await self.redis.xautoclaim(
                self.stream, keys.ROUTER_GROUP, self.consumer,
                min_idle_time=int(self.settings.claim_idle * 1000), count=BATCH)
            claimed = [(eid, fields) for eid, fields in reply[1] if fields]
            if claimed:
                log.info("claimed entries of a stopped router", count=len(claimed))
                return claimed
        reply = await self.redis.xreadgroup(keys.ROUTER_GROUP, self.consumer, {self.stream: ">"},
                                            count=BATCH, block=BLOCK_MS)
        return _entries(reply)

    async def refresh_partners(self) -> list[Partner]:
        """Reload partners when any changed (one GET per batch when none did)."""
        version = await self.redis.get(keys.PARTNERS_VERSION)
        if version != self._version:
            raw = await self.redis.hgetall(keys.PARTNERS)
            self._partners = [decode_partner(value) for value in raw.values()]
            self._version = version
        return self._partners

    async def route(self, entries: list[Entry]) -> None:
        partners = await self.refresh_partners()
        now_ms = int(time.time() * 1000)
        spans = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for raw_id, fields in entries:
                entry_id = raw_id.decode()
                parsed = events.parse(entry_id, fields, self.settings.max_event_bytes)
                if isinstance(parsed, str):
                    log.warning("malformed event dead-lettered", entry_id=entry_id, reason=parsed)
                    await self._call(pipe, entry_id, now_ms, events.describe(fields), [], "",
                                     0, parsed)
                    continue
                targets = [p for p in partners if p.subscribes(parsed.type)]
                dedupe = keys.DEDUPE_TTL if b"id" in fields else 0
                if self.tracer is not None:
                    span = telemetry.route_span(self.tracer, parsed, len(targets))
                    parsed.trace = telemetry.traceparent(span)
                    spans.append(span)
                await self._call(pipe, entry_id, now_ms, _message_encoder.encode(parsed),
                                 targets, parsed.id, dedupe, "")
            await pipe.execute()
        for span in spans:
            span.end()

    async def _call(self, pipe: Any, entry_id: str, now_ms: int, payload: bytes | str,
              targets: list[Partner], event_id: str, dedupe_ttl: int, dead_reason: str) -> None:
        route_keys = [self.stream, keys.READY, keys.LEASES, keys.DEAD]
        for partner in targets:
            route_keys += [keys.stream(partner.id), keys.seen(partner.id, event_id)]
        wake = "".join("1" if p.enabled else "0" for p in targets)
        args: list[Any] = [keys.ROUTER_GROUP, entry_id, now_ms, dedupe_ttl, payload, wake,
                           dead_reason, keys.DEAD_KEPT, *(p.id for p in targets)]
        # queued on the pipeline: awaiting it returns at once, the batch runs on execute()
        await self.scripts.route(keys=route_keys, args=args, client=pipe)


def _entries(reply: Any) -> list[Entry]:
    if not reply:
        return []
    return [(eid, fields) for eid, fields in reply[0][1] if fields]
