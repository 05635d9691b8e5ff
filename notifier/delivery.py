"""The delivery pool: lease partners with work, serve each for a quantum, give it back.

Idle partners cost nothing: only partners in `notifier:ready` whose score has come are leased
(`lua/lease.lua`), so a process does O(log n) work per tick whatever the number of partners.
Each leased partner becomes a `ServedPartner`, served by one coroutine for a short quantum with
at most its own `max_in_flight` requests open, then given back scored by when it next has work
(`lua/release.lua`); taking partners in score order is round-robin among the due ones, so a
partner with a huge backlog, a rate limit or a hanging endpoint only ever spends its own slots.

Nothing a served partner holds is left to expire. Whatever ends its serve (its quantum, a
shutdown, Redis going away, a bug), it waits for its open requests, records their outcomes and
gives the partner back. What cannot reach Redis then (the outcomes, the release, and the
messages of a take whose reply was lost) is kept and handed back by the pool's next tick once
Redis answers again, instead of waiting NOTIFIER_CLAIM_IDLE for leases and visibility timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import msgspec
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import keys, logs, lua, retry, signing
from notifier.config import Settings
from notifier.connection import TRANSIENT, consumer_name, keep_running, until_stopped
from notifier.crypto import SecretBox
from notifier.lua import Scripts
from notifier.models import Attempt, Outcome, Partner, Taken, decode_partner, utc_now
from notifier.ratelimit import MARGIN_MS, parse_rate
from notifier.sender import Sender
from notifier.store import Store
from notifier.telemetry import Telemetry

log = logs.get("delivery")

#: How long one coroutine serves a partner before giving the others due a turn.
QUANTUM = 2.0
#: The longest an idle process blocks for a wake-up before looking at `ready` again.
FALLBACK = 2.0
#: A rate-limit slot opening sooner than this is waited for within the lease.
SHORT_WAIT = 0.15
#: The shortest pause of a serve loop: a slot time already past still costs a turn of the
#: clock, so no path through the loop can spin without yielding time.
MIN_PAUSE = 0.001
#: After every attempt failed for this long, a partner gets only a probe batch per pause.
BREAKER_AFTER = 1.0
BREAKER_PAUSE = 30.0
#: Partners leased per look at `ready`: small steps spread them over the delivery processes.
LEASE_STEP = 4
#: Above this share of one CPU, a process takes no more partners (see `tick`).
CPU_BUSY = 0.9
CPU_SAMPLE = 0.25
#: Tries at giving a partner back while Redis answers errors for it, before leaving its lease
#: to run out.
GIVE_BACK_TRIES = 3
#: Errors of a Redis call that mean "this call did not (visibly) happen".
REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, rx.ResponseError)

_encode = msgspec.json.Encoder().encode


def now_ms() -> int:
    return int(time.time() * 1000)


class Delivery:
    def __init__(self, redis: Redis, settings: Settings, sender: Sender,
                 telemetry: Telemetry | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.sender = sender
        self.telemetry = telemetry or Telemetry.disabled()
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
        #: Lease ends of lease calls whose replies were lost: their partners are given back.
        self._lost_leases: list[int] = []
        #: Partners this process has served: it leaves their consumer groups when it stops.
        self._served_ids: set[str] = set()
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._busy = 0.0
        #: How blocked waits for work ended: a wake-up `token`, the `timer` of a known due time,
        #: or the `fallback` (which should catch nothing).
        self.wakeups: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; then let open requests finish and give every partner back."""
        self.stopping = stop
        await keep_running("delivery", self.tick, stop)
        if self._serving:
            await asyncio.gather(*self._serving, return_exceptions=True)
        try:
            await self.give_back_unreturned()
            await self._leave_groups()
        except REDIS_ERRORS as exc:
            log.warning("could not give partners back before stopping; their leases and "
                        "messages expire after NOTIFIER_CLAIM_IDLE",
                        partners=len(self._unreturned), error=str(exc))

    async def _leave_groups(self) -> None:
        """Remove this process's consumer from the groups of the partner streams it served,
        where it holds nothing, so stopped processes do not pile up in them."""
        calls = [self.scripts.send(lua.prune_consumers(
            stream=keys.stream(pid), group=keys.DELIVERY_GROUP, consumer=self.consumer))
            for pid in self._served_ids]
        await asyncio.gather(*calls)

    async def tick(self) -> None:
        if self._unreturned or self._lost_leases:
            await self.give_back_unreturned()
        if self._cpu_busy() > CPU_BUSY and self._serving:
            # Saturated: more partners here would only share this CPU. Leave them (and the
            # wake-up tokens) to another delivery process, which is how adding processes
            # adds throughput.
            await asyncio.sleep(CPU_SAMPLE)
            return
        free = min(self.settings.concurrency - len(self._serving), LEASE_STEP)
        if free <= 0:
            await asyncio.wait(self._serving, return_when=asyncio.FIRST_COMPLETED)
            return
        now = now_ms()
        lease_until = now + self.lease_ms
        try:
            leased = await self.scripts.send(
                lua.lease(now_ms=now, lease_until=lease_until, count=free))
        except BaseException:
            self._lost_leases.append(lease_until)
            raise
        for partner_id, record in leased.partners:
            self._served_ids.add(partner_id)
            served = ServedPartner(self, partner_id, record, lease_until)
            task = asyncio.create_task(served.run())
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        if leased.partners:
            return
        if leased.next_due_ms < 0:
            await self._wait_for_work(FALLBACK, "fallback")
            return
        wait = (leased.next_due_ms - now_ms()) / 1000
        if wait > 0:
            await self._wait_for_work(min(wait, FALLBACK),
                                      "timer" if wait < FALLBACK else "fallback")

    async def _wait_for_work(self, seconds: float, why: str) -> None:
        """Block on `notifier:wake` until a partner becomes due (a token) or `seconds` pass:
        the time the earliest known partner is due (`timer`), or the bounded `fallback` that
        catches a lost token. Idle, that is one Redis call per FALLBACK seconds."""
        token = await until_stopped(self.stopping, self.redis.blpop([keys.WAKE],
                                                                    timeout=max(seconds, 0.001)))
        if not self.stopping.is_set():
            self.wakeups[why if token is None else "token"] += 1

    async def give_back_unreturned(self) -> None:
        """Record and release what served partners could not while Redis was away, and the
        partners of lost lease calls; raises (keeping the rest) if Redis is still away."""
        while self._lost_leases:
            await self.scripts.send(lua.unlease(now_ms=now_ms(),
                                                lease_until=self._lost_leases[0]))
            self._lost_leases.pop(0)
        while self._unreturned:
            served = self._unreturned[0]
            try:
                await served.give_back()
            except rx.ResponseError as exc:
                # Redis answers, but not for this partner (a key of the wrong type, say): one
                # broken partner must not hold up every other. Its lease runs out instead.
                served.give_back_failures += 1
                if served.give_back_failures < GIVE_BACK_TRIES:
                    raise
                log.error("could not give a partner back; its lease expires after "
                          "NOTIFIER_CLAIM_IDLE", partner=served.partner_id, error=str(exc))
            else:
                log.info("partner given back", partner=served.partner_id)
            self._unreturned.pop(0)

    def _cpu_busy(self) -> float:
        """The share of wall time this process spent on CPU since about CPU_SAMPLE ago."""
        wall, cpu = time.monotonic(), time.process_time()
        if wall - self._cpu_mark[0] >= CPU_SAMPLE:
            last_wall, last_cpu = self._cpu_mark
            self._busy = (cpu - last_cpu) / (wall - last_wall)
            self._cpu_mark = (wall, cpu)
        return self._busy


class ServedPartner:
    """One partner leased by this process: its lease, its open sends, when it may send next,
    and its breaker. `run` serves it for a quantum and always ends by giving it back."""

    def __init__(self, pool: Delivery, partner_id: str, record: bytes,
                 lease_until: int) -> None:
        self.pool = pool
        self.partner_id = partner_id
        self.record = record
        self.partner: Partner | None = None
        self.signing_keys: list[bytes] = []
        self.limit = 0
        self.window_ms = 0
        self.max_in_flight = 1
        #: The latest lease end this process set: a later one is another process's lease.
        self.held_until = lease_until
        #: 0, or the ms before which the partner may not send (rate limit, ordered head,
        #: breaker); parks it in `ready` until then when it is given back.
        self.blocked_until = 0
        self.active = True
        self.tripped = False
        self.inflight: dict[asyncio.Task[Outcome], Taken] = {}
        # Completed sends are collected by callback: cheaper than asyncio.wait over every open
        # request each time one finishes.
        self.finished: list[asyncio.Task[Outcome]] = []
        self.one_finished = asyncio.Event()
        #: Settles Redis has not confirmed yet, oldest first: sent again by `give_back`.
        self.unsettled: list[lua.Call[int]] = []
        self.settling: list[asyncio.Future[int]] = []
        #: Due scores given by takes whose replies were lost (their messages are ours).
        self.lost_due: list[int] = []
        self.give_back_failures = 0

    async def run(self) -> None:
        try:
            if await self._prepare():
                await self._serve()
        except REDIS_ERRORS as exc:
            log.warning("redis failed while serving a partner; giving it back when it returns",
                        partner=self.partner_id, error=str(exc))
        except Exception:
            log.exception("serving a partner failed", partner=self.partner_id)
        finally:
            await self._drain()
            try:
                await self.give_back()
            except REDIS_ERRORS:
                self.pool._unreturned.append(self)
            except Exception:
                log.exception("giving a partner back failed", partner=self.partner_id)
                self.pool._unreturned.append(self)

    async def _prepare(self) -> bool:
        """Read what serving needs from the partner's record; a record that cannot be served
        disables the partner once, with the reason, and keeps its messages."""
        try:
            self.partner = decode_partner(self.record)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("partner record unreadable; not serving it", partner=self.partner_id,
                      error=str(exc))
            self.active = False
            return False
        if not self.partner.enabled:
            self.active = False
            return False
        now = now_ms()
        try:
            self.signing_keys = [signing.secret_key(self.pool.box.open(s.value))
                                 for s in self.partner.secrets
                                 if s.expires_ms is None or s.expires_ms > now]
            rate = parse_rate(self.partner.rate_limit)
        except ValueError as exc:
            await self._disable(f"cannot be served: {exc}")
            return False
        if rate is not None:
            self.limit, self.window_ms = rate.limit, rate.window_ms + MARGIN_MS
        self.max_in_flight = 1 if self.partner.ordered else self.partner.max_in_flight
        return True

    async def _serve(self) -> None:
        deadline = time.monotonic() + QUANTUM
        while True:
            if self._may_take(deadline):
                await self._take()
            pause = self._pause(deadline)
            if not self.inflight:
                if pause is None:
                    return
                await asyncio.sleep(pause)
                continue
            settled = await self._collect(pause)
            if settled:
                await self._settle(settled)

    def _may_take(self, deadline: float) -> bool:
        return (self.active and not self.tripped and not self.pool.stopping.is_set()
                and time.monotonic() < deadline and len(self.inflight) < self.max_in_flight)

    def _pause(self, deadline: float) -> float | None:
        """How long to wait before taking again, when a slot opens soon enough to wait for it
        within this lease; None when there is nothing to wait for but open sends (or nothing at
        all). Never zero or less, so the loop always yields time."""
        if not self.blocked_until or not self._may_take(deadline):
            return None
        wait = self.blocked_until / 1000 - time.time()
        if wait > SHORT_WAIT or time.monotonic() + wait > deadline:
            return None
        return max(wait, MIN_PAUSE)

    async def _take(self) -> None:
        assert self.partner is not None
        pool = self.pool
        now = now_ms()
        lease_until = now + pool.lease_ms
        self.held_until = max(self.held_until, lease_until)
        call = lua.take(partner_id=self.partner_id, consumer=pool.consumer, now_ms=now,
                        want=self.max_in_flight - len(self.inflight), limit=self.limit,
                        window_ms=self.window_ms, ordered=self.partner.ordered,
                        lease_until=lease_until, visible_ms=pool.visible_ms,
                        token=uuid.uuid4().hex)
        try:
            took = await pool.scripts.send(call)
        except BaseException:
            # The take may have run without its reply reaching us: its messages carry this
            # due score, by which `give_back` finds them again.
            self.lost_due.append(now + pool.visible_ms)
            raise
        # Below zero: the partner's stream is gone (removed, or Redis flushed), which is
        # nothing to take; `release` decides what that means, atomically with its check.
        self.blocked_until = max(took.blocked_until, 0)
        for taken in took.messages:
            task = asyncio.create_task(pool.sender.send(
                self.partner, taken.message, self.signing_keys, taken.attempt))
            task.add_done_callback(self._collected)
            self.inflight[task] = taken

    def _collected(self, task: asyncio.Task[Outcome]) -> None:
        self.finished.append(task)
        self.one_finished.set()

    async def _collect(self, pause: float | None) -> list[tuple[Taken, Outcome]]:
        """Wait for at least one open send to finish (or `pause` to pass); the finished ones."""
        if not self.finished:
            self.one_finished.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.one_finished.wait()
        done, self.finished = self.finished, []
        return [(self.inflight.pop(task), _outcome(task)) for task in done]

    async def _drain(self) -> None:
        """Let every open send finish (each bounded by the request timeout) and record them,
        then wait for every settle still on its way."""
        while self.inflight:
            settled = await self._collect(None)
            if settled:
                self._queue_settle(settled)
        if self.settling:
            await asyncio.gather(*self.settling, return_exceptions=True)

    async def _settle(self, settled: Sequence[tuple[Taken, Outcome]]) -> None:
        reply = self._queue_settle(settled)
        if all(outcome.ok for _, outcome in settled):
            # Its reply decides nothing: the next take follows it in the same round trip, and
            # Redis runs them in order.
            return
        await self._judge(settled, await reply)

    def _queue_settle(self, settled: Sequence[tuple[Taken, Outcome]]) -> asyncio.Future[int]:
        call = self._settle_call(settled)
        self.unsettled.append(call)
        reply = self.pool.scripts.send(call)
        self.settling.append(reply)

        def confirmed(done: asyncio.Future[int]) -> None:
            self.settling.remove(done)
            if not done.cancelled() and done.exception() is None:
                self.unsettled.remove(call)

        reply.add_done_callback(confirmed)
        return reply

    def _settle_call(self, settled: Sequence[tuple[Taken, Outcome]]) -> lua.Call[int]:
        """The record of a batch of outcomes, as one `lua/settle.lua` call."""
        assert self.partner is not None
        pool, pid = self.pool, self.partner_id
        at = utc_now()
        now = time.time()
        delivered: list[str] = []
        retries: list[lua.Retry] = []
        dead: list[lua.Dead] = []
        records: list[bytes] = []
        pool.telemetry.attempts(self.partner, settled)
        for taken, outcome in settled:
            record = _encode(Attempt(
                message_id=taken.message.id, event_type=taken.message.type,
                attempt=taken.attempt, at=at, status=outcome.status,
                latency_ms=round(outcome.latency_ms, 2), ok=outcome.ok, error=outcome.error))
            records.append(record)
            if outcome.ok:
                delivered.append(taken.entry_id)
                continue
            wait = retry.delay(taken.attempt, pool.settings.retry_schedule, outcome.retry_after)
            if wait is None and outcome.gone:
                # the partner is being disabled: keep the message for when it is back
                wait = pool.settings.retry_schedule[-1]
            if wait is None:
                reason = f"gave up after {taken.attempt} attempts: {outcome.error}"
                log.warning("message dead-lettered", partner=pid, message_id=taken.message.id,
                            attempt=taken.attempt, status=outcome.status, reason=reason)
                dead.append(lua.Dead(taken.entry_id, reason, _encode(taken.message), record,
                                     at))
                pool.telemetry.dead_lettered(self.partner)
            else:
                log.info("delivery failed, will retry", partner=pid,
                         message_id=taken.message.id, attempt=taken.attempt,
                         status=outcome.status, error=outcome.error, retry_in=round(wait, 3))
                retries.append(lua.Retry(taken.entry_id, int((now + wait) * 1000), record))
        # A slot is stamped when it is taken; moving it to when its request was sent keeps a
        # request that waited for the CPU from landing within a window of the next ones.
        sent = [(taken.slot, outcome.sent_ms) for taken, outcome in settled] if self.limit else []
        return lua.settle(partner_id=pid, now_ms=int(now * 1000), delivered=delivered,
                          retries=retries, dead=dead, sent=sent, records=records)

    async def _judge(self, settled: Sequence[tuple[Taken, Outcome]], failing_ms: int) -> None:
        """After a batch with failures: disable a partner that is gone or has failed for
        NOTIFIER_DISABLE_AFTER, and trip the breaker of one whose every attempt has failed for
        BREAKER_AFTER."""
        if not failing_ms:
            return
        now = time.time()
        failing_since = failing_ms / 1000
        disable_after = self.pool.settings.disable_after
        if any(outcome.gone for _, outcome in settled):
            await self._disable("endpoint answered 410 Gone")
        elif now - failing_since >= disable_after:
            await self._disable(f"every attempt failed for {disable_after:g}s")
        if self.active and now - failing_since >= BREAKER_AFTER:
            # Every attempt has failed for a while: the endpoint is down. Stop sending it new
            # work, and probe again after a pause, rather than spend this process's CPU on
            # requests that fail while other partners wait.
            self.tripped = True
            pause = min(self.pool.settings.retry_schedule[0], BREAKER_PAUSE)
            self.blocked_until = int((now + pause) * 1000)

    async def _disable(self, reason: str) -> None:
        self.active = False
        await self.pool.store.disable(self.partner_id, reason)
        log.warning("partner disabled", partner=self.partner_id, reason=reason)

    async def give_back(self) -> None:
        """Record what is unsettled, then release the partner (`lua/release.lua`)."""
        scripts = self.pool.scripts
        while self.unsettled:
            await scripts.send(self.unsettled[0])
            self.unsettled.pop(0)
        await scripts.send(lua.release(
            partner_id=self.partner_id, now_ms=now_ms(), blocked_until=self.blocked_until,
            active=self.active, held_until=self.held_until, lost_due=self.lost_due))
        self.lost_due = []


def _outcome(task: asyncio.Task[Outcome]) -> Outcome:
    """A send's outcome; a send that was cancelled or broke is a failed attempt, not a crash."""
    if task.cancelled():
        return Outcome(ok=False, error="request cancelled")
    exc = task.exception()
    if exc is not None:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
    return task.result()
