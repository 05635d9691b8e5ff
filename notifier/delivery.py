"""The delivery pool: lease partners with work, send their messages, settle the outcomes.

Idle partners cost nothing: only partners in `notifier:ready` whose score has come are leased
(`lua/lease.lua`), so a process does O(log n) work per tick whatever the number of partners.
Each leased partner is served by one coroutine for a short quantum, with at most its own
`max_in_flight` requests open, then given back scored by when it next has work
(`lua/release.lua`); taking partners in score order is round-robin among the due ones, so a
partner with a huge backlog, a rate limit or a hanging endpoint only ever spends its own slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from notifier import keys, logs, retry, signing
from notifier.autopipeline import AutoPipeline
from notifier.config import Settings
from notifier.connection import consumer_name, keep_running
from notifier.crypto import SecretBox
from notifier.models import Attempt, Message, Partner, decode_partner, utc_now
from notifier.ratelimit import MARGIN_MS, parse_rate
from notifier.scripts import Scripts
from notifier.sender import Outcome, Sender
from notifier.store import Store
from notifier.telemetry import Telemetry

log = logs.get("delivery")

#: How long one coroutine serves a partner before giving the others due a turn.
QUANTUM = 2.0
#: How long an idle process waits before looking at `ready` again.
IDLE_POLL = 0.02
#: A rate-limit slot opening sooner than this is waited for within the lease.
SHORT_WAIT = 0.15
#: After every attempt failed for this long, a partner gets only a probe batch per pause.
BREAKER_AFTER = 1.0
BREAKER_PAUSE = 30.0
#: Partners leased per look at `ready`: small steps spread them over the delivery processes.
LEASE_STEP = 4
#: Above this share of one CPU, a process takes no more partners (see `tick`).
CPU_BUSY = 0.9
CPU_SAMPLE = 0.25

_message_decoder = msgspec.json.Decoder(Message)
_encode = msgspec.json.Encoder().encode


def now_ms() -> int:
    return int(time.time() * 1000)


class Taken(msgspec.Struct):
    entry_id: str
    message: Message
    attempt: int
    slot: str  # its member in the rate-limit window log


class Delivery:
    def __init__(self, redis: Redis, settings: Settings, sender: Sender,
                 telemetry: Telemetry | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.sender = sender
        self.telemetry = telemetry or Telemetry.disabled()
        self.store = Store(redis, settings)
        self.scripts = Scripts(redis)
        self.calls = AutoPipeline(redis)
        self.box = SecretBox(settings.secret_key)
        self.consumer = consumer_name(settings.consumer)
        self.lease_ms = int(settings.claim_idle * 1000)
        self.visible_ms = int(settings.claim_idle * 1000)
        self._serving: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._busy = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then let open requests finish and give every partner back."""
        self._stop = stop
        await keep_running("delivery", self.tick, stop)
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)

    async def tick(self) -> None:
        free = min(self.settings.concurrency - len(self._serving), LEASE_STEP)
        if self._cpu_busy() > CPU_BUSY:
            # Saturated: more partners here would only share this CPU. Leave them in `ready`
            # for another delivery process, which is how adding processes adds throughput.
            free = 0 if self._serving else 1
        next_due = -1
        if free > 0:
            now = now_ms()
            next_due, leased = await self.calls.call(
                self.scripts.lease, [keys.READY, keys.LEASES, keys.PARTNERS],
                [now, now + self.lease_ms, free])
            for i in range(0, len(leased), 2):
                task = asyncio.create_task(self.serve(leased[i].decode(), leased[i + 1]))
                self._serving.add(task)
                task.add_done_callback(self._served)
            if leased:
                return
        wait = IDLE_POLL
        if next_due >= 0:
            wait = min(wait, max(0.0, (next_due - now_ms()) / 1000))
        await asyncio.sleep(wait)

    def _cpu_busy(self) -> float:
        """The share of wall time this process spent on CPU since about CPU_SAMPLE ago."""
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._cpu_mark[0] >= CPU_SAMPLE:
            last_wall, last_cpu = self._cpu_mark
            self._busy = (cpu - last_cpu) / (wall - last_wall)
            self._cpu_mark = (wall, cpu)
        return self._busy

    def _served(self, task: asyncio.Task[None]) -> None:
        # No wake-up here: the partner just given back goes to whichever process looks first,
        # not always to this one, so partners spread over the processes.
        self._serving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("serving a partner failed", error=repr(task.exception()))

    async def serve(self, partner_id: str, config: bytes) -> None:
        """Serve one leased partner for a quantum, then release it."""
        partner = decode_partner(config)
        blocked = 0
        active = partner.enabled
        try:
            if active:
                blocked, active = await self._serve(partner)
        finally:
            await self.calls.call(
                self.scripts.release,
                [keys.READY, keys.LEASES, keys.stream(partner_id), keys.due(partner_id)],
                [partner_id, now_ms(), blocked, "1" if active else "0"])

    async def _serve(self, partner: Partner) -> tuple[int, bool]:
        secrets = self._signing_keys(partner)
        rate = parse_rate(partner.rate_limit)
        limit, window_ms = (rate.limit, rate.window_ms + MARGIN_MS) if rate else (0, 0)
        max_in_flight = 1 if partner.ordered else partner.max_in_flight
        inflight: dict[asyncio.Task[Outcome], Taken] = {}
        # Completed sends are collected by callback: cheaper than asyncio.wait over every open
        # request each time one finishes.
        finished: list[asyncio.Task[Outcome]] = []
        settled_any = asyncio.Event()

        def collect(task: asyncio.Task[Outcome]) -> None:
            finished.append(task)
            settled_any.set()

        deadline = time.monotonic() + QUANTUM
        blocked, active, tripped = 0, True, False
        # A settle whose reply decides nothing (all its sends succeeded) is not waited for
        # before the next take, so both go to Redis in one round trip, in that order.
        settling: asyncio.Future[Any] | None = None
        while True:
            if (active and not tripped and not self._stop.is_set()
                    and time.monotonic() < deadline and len(inflight) < max_in_flight):
                taking = self._take(partner, max_in_flight - len(inflight), limit, window_ms)
                if settling is None:
                    blocked, batch = await taking
                else:
                    (blocked, batch), _ = await asyncio.gather(taking, settling)
                    settling = None
                for taken in batch:
                    task = asyncio.create_task(
                        self.sender.send(partner, taken.message, secrets, taken.attempt))
                    task.add_done_callback(collect)
                    inflight[task] = taken
            if settling is not None:
                await settling
                settling = None
            # A slot opening within SHORT_WAIT is waited for here: cheaper than parking the
            # partner and leasing it again, and it keeps a limited partner near its full rate.
            wait = blocked / 1000 - time.time() if blocked and not tripped else None
            if wait is not None and (wait > SHORT_WAIT or time.monotonic() + wait > deadline):
                wait = None
            if not inflight:
                if wait is None:
                    return blocked, active
                await asyncio.sleep(max(0.0, wait))
                continue
            if not finished:
                settled_any.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await settled_any.wait()
                if not finished:
                    continue
            settled = [(inflight.pop(task), task.result()) for task in finished]
            finished.clear()
            settling = self._settle(partner, settled)
            if all(outcome.ok for _, outcome in settled):
                continue
            still_active, failing_since = await self._judge(partner, settled, await settling)
            settling = None
            active = active and still_active
            if failing_since is not None and time.time() - failing_since >= BREAKER_AFTER:
                # Every attempt has failed for a while: the endpoint is down. Stop sending it
                # new work, and probe again after a pause, rather than spend this process's
                # CPU on requests that fail while other partners wait.
                tripped = True
                pause = min(self.settings.retry_schedule[0], BREAKER_PAUSE)
                blocked = int((time.time() + pause) * 1000)

    def _signing_keys(self, partner: Partner) -> list[bytes]:
        now = now_ms()
        return [signing.secret_key(self.box.open(s.value)) for s in partner.secrets
                if s.expires_ms is None or s.expires_ms > now]

    def _take(self, partner: Partner, want: int, limit: int,
              window_ms: int) -> Coroutine[Any, Any, tuple[int, list[Taken]]]:
        """Queue a take (`lua/take.lua`) now; awaiting the result gives (blocked until, the
        messages taken)."""
        now = now_ms()
        slots = uuid.uuid4().hex
        reply = self.calls.call(
            self.scripts.take,
            [keys.stream(partner.id), keys.due(partner.id), keys.window(partner.id),
             keys.READY, keys.LEASES],
            [keys.DELIVERY_GROUP, self.consumer, now, want, limit, window_ms,
             "1" if partner.ordered else "0", now + self.lease_ms, partner.id,
             self.visible_ms, slots])
        return _taken(reply, slots)

    def _settle(self, partner: Partner,
                settled: Sequence[tuple[Taken, Outcome]]) -> asyncio.Future[Any]:
        """Queue the record of a batch of outcomes (`lua/settle.lua`, one call) now.

        Its reply is the ms since which every attempt to the partner has failed, 0 when one of
        these succeeded.
        """
        pid = partner.id
        at = utc_now()
        now = time.time()
        delivered: list[str] = []
        retries: list[Any] = []
        dead: list[Any] = []
        records: list[bytes] = []
        # A slot is stamped when it is taken; moving it to when its request was sent keeps a
        # request that waited for the CPU from landing within a window of the next ones.
        sent = [v for taken, outcome in settled for v in (taken.slot, outcome.sent_ms)]
        self.telemetry.attempts(partner, settled)
        for taken, outcome in settled:
            record = Attempt(message_id=taken.message.id, event_type=taken.message.type,
                             attempt=taken.attempt, at=at, status=outcome.status,
                             latency_ms=round(outcome.latency_ms, 2), ok=outcome.ok,
                             error=outcome.error)
            records.append(_encode(record))
            if outcome.ok:
                delivered.append(taken.entry_id)
                continue
            wait = retry.delay(taken.attempt, self.settings.retry_schedule, outcome.retry_after)
            if wait is None and outcome.gone:
                # the partner is being disabled: keep the message for when it is back
                wait = self.settings.retry_schedule[-1]
            log.info("delivery failed", partner=pid, message_id=taken.message.id,
                     attempt=taken.attempt, status=outcome.status, error=outcome.error,
                     retry_in=None if wait is None else round(wait, 3))
            if wait is None:
                dead += [taken.entry_id,
                         f"gave up after {taken.attempt} attempts: {outcome.error}",
                         _encode(taken.message), records[-1], at]
                self.telemetry.dead_lettered(partner)
            else:
                retries += [taken.entry_id, int((now + wait) * 1000), records[-1]]
        return self.calls.call(
            self.scripts.settle,
            [keys.stream(pid), keys.due(pid), keys.history(pid), keys.attempts(pid),
             keys.failing(pid), keys.DEAD, keys.window(pid)],
            [keys.DELIVERY_GROUP, keys.ATTEMPTS_KEPT, keys.DEAD_KEPT, pid, int(now * 1000),
             "1" if delivered else "0", len(delivered), len(retries) // 3, len(dead) // 5,
             len(sent) // 2, *delivered, *retries, *dead, *sent, *records])

    async def _judge(self, partner: Partner, settled: Sequence[tuple[Taken, Outcome]],
                     failing_ms: int) -> tuple[bool, float | None]:
        """After a batch with failures: whether the partner is still enabled, and since when
        every attempt to it has failed (None when one of these succeeded)."""
        if not failing_ms:
            return True, None
        pid = partner.id
        now = time.time()
        gone = any(outcome.gone for _, outcome in settled)
        failing_since = int(failing_ms) / 1000
        if gone or now - failing_since >= self.settings.disable_after:
            reason = ("endpoint answered 410 Gone" if gone else
                      f"every attempt failed for {self.settings.disable_after:g}s")
            await self.store.disable(pid, reason)
            log.warning("partner disabled", partner=pid, reason=reason)
            return False, failing_since
        return True, failing_since


async def _taken(reply: Awaitable[Any], slots: str) -> tuple[int, list[Taken]]:
    found = await reply
    batch = [Taken(found[i].decode(), _message_decoder.decode(found[i + 1]),
                   int(found[i + 2]), f"{slots}:{n}")
             for n, i in enumerate(range(1, len(found), 3), 1)]
    return int(found[0]), batch
