"""One leased partner, served by one coroutine for a quantum: the attempt and settle steps of
the flow.

A served partner takes messages with their rate-limit slots (`lua/take.lua`), sends each (at
most `max_in_flight` open), records the outcomes in batches (`lua/settle.lua`) and gives the
partner back (`lua/release.lua`). Nothing it holds is left to expire: whatever ends its serve
(its quantum, a shutdown, Redis going away, a bug), it gives the partner back, waits for its
open requests and records their outcomes, or leaves that to its pool when Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import msgspec

from notifier import logs, ops, pacing, signing
from notifier.engine import breaker, settle
from notifier.engine.context import ServeContext
from notifier.engine.pacer import Pacer
from notifier.models import Outcome, Partner, Taken, decode_partner, now_ms
from notifier.ratelimit import parse_rate
from notifier.redis import lua
from notifier.redis.connection import REDIS_ERRORS

log = logs.get("delivery")

#: How long one coroutine serves a partner before giving the others due a turn.
QUANTUM = 2.0
#: A rate-limit slot opening sooner than this is waited for within the lease.
SHORT_WAIT = 0.15
#: The shortest pause of a serve loop: a slot time already past still costs a turn of the
#: clock, so no path through the loop can spin without yielding time.
MIN_PAUSE = 0.001
#: A request is settled at most this long after its timeout: one taken longer ago than both is
#: no longer open, and no longer holds a share of its partner's concurrency.
SETTLE_MS = 1000


class ServedPartner:
    """One partner leased by this process: its lease, its open sends, when it may send next,
    and its breaker. `run` serves it for a quantum and always ends by giving it back."""

    def __init__(
        self, pool: ServeContext, partner_id: str, record: bytes, lease_until: int
    ) -> None:
        self.pool = pool
        self.shard = pool.keyspace.shard_of(partner_id)
        self.keys = pool.keyspace.partner(partner_id)
        self.teller = settle.Teller(pool.metrics, pool.report, partner_id)
        self.partner_id = partner_id
        self.record = record
        self.partner: Partner | None = None
        self.signing_keys: list[signing.Key] = []
        self.limit = 0
        #: the rate limit's window, or the window a pace is kept over without one
        self.window_ms = pacing.WINDOW_MS
        #: how many requests it may have open (`max_in_flight`, or fewer while paced)
        self.pacer = Pacer(partner_id, False, 1, None)
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
        self.unsettled: list[settle.Batch] = []
        self.settling: list[asyncio.Future[lua.Settled]] = []
        #: `inflight` scores given by takes whose replies were lost (their messages are ours).
        self.lost_visible: list[int] = []
        self.give_back_failures = 0
        #: True once a settle with a success ran with nothing failing after it: the partner's
        #: failing run and breaker are known not to be set, so settles skip clearing them.
        self.clear = False
        self.failures = 0

    async def run(self) -> None:
        try:
            if await self._prepare():
                await self._serve()
        except REDIS_ERRORS as exc:
            log.warning(
                "redis failed while serving a partner; giving it back when it returns",
                partner=self.partner_id,
                error=str(exc),
            )
        except Exception:
            log.exception("serving a partner failed", partner=self.partner_id)
        finally:
            await self._end()

    async def _end(self) -> None:
        """Give the partner back and record the outcomes of its open sends.

        An unordered partner is given back while its requests are still open: its next serve,
        here or in another process, counts them against max_in_flight and the pace
        (`lua/take.lua`), so a request held to its timeout does not idle the partner until it
        ends. Once they are recorded, the partner is given back again, which schedules the
        retries they made. An ordered partner's head is recorded first: its next serve would
        otherwise wait for the head's visibility timeout."""
        if self.inflight and self.partner is not None and not self.partner.ordered:
            if self.finished:
                self._queue_settle(await self._collect(None))
            with contextlib.suppress(Exception):
                # (what fails here is sent again below, once the open sends are recorded)
                await self.give_back()
        await self._drain()
        try:
            await self.give_back()
        except REDIS_ERRORS:
            self.pool.unreturned(self)
        except Exception:
            log.exception("giving a partner back failed", partner=self.partner_id)
            self.pool.unreturned(self)

    async def _prepare(self) -> bool:
        """Read what serving needs from the partner's record; a record that cannot be served
        disables the partner once, with the reason, and keeps its messages."""
        try:
            self.partner = decode_partner(self.record)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error(
                "partner record unreadable; not serving it", partner=self.partner_id, error=str(exc)
            )
            self.active = False
            return False
        if not self.partner.enabled:
            self.active = False
            return False
        try:
            self.signing_keys = self.pool.box.signing_keys(self.partner, now_ms())
            rate = parse_rate(self.partner.rate_limit)
        except ValueError as exc:
            await self._disable(f"cannot be served: {exc}")
            return False
        if rate is not None:
            self.limit, self.window_ms = rate.limit, rate.window_ms
        most = 1 if self.partner.ordered else self.partner.max_in_flight
        # a throttle is heard of within `open_ms` of its request: a timeout that late
        self.pacer = Pacer(
            self.partner_id, self.pool.settings.pacing, most, rate, quiet_ms=self.pool.open_ms
        )
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
            left = deadline - time.monotonic()
            if (left <= 0 or self.pool.stopping.is_set()) and not self.finished:
                return  # the open requests are recorded after the partner is given back
            wait = pause if pause is not None else max(left, MIN_PAUSE)
            settled = await self._collect(min(wait, self.pacer.until_held(self.inflight, now_ms())))
            if settled:
                await self._settle(settled)
            self._tell_held()

    def _tell_held(self) -> None:
        """Tell the pace of requests held open now, not a timeout later (not waited for: their
        timeouts tell it again, which it does not count twice)."""
        now = now_ms()
        told = self.pacer.tell_held(self.inflight, now)
        if told is not None:
            call = settle.told_only(self.shard, self.keys, told, now)
            self.pool.scripts.send(call).add_done_callback(self._heard)

    def _heard(self, reply: asyncio.Future[lua.Settled]) -> None:
        if not reply.cancelled() and reply.exception() is None:
            self.pacer.settled(reply.result())

    def _may_take(self, deadline: float) -> bool:
        return (
            self.active
            and not self.tripped
            and not self.pool.stopping.is_set()
            and time.monotonic() < deadline
            and len(self.inflight) < self.pacer.cap()
        )

    def _pause(self, deadline: float) -> float | None:
        """How long to wait before taking again, when a slot opens within this quantum: soon
        (SHORT_WAIT), or any time while open sends are waited for anyway; None when there is
        nothing to wait for but open sends (or nothing at all). Never zero or less, so the
        loop always yields time."""
        if not self.blocked_until or not self._may_take(deadline):
            return None
        wait = self.blocked_until / 1000 - time.time()
        if (wait > SHORT_WAIT and not self.inflight) or time.monotonic() + wait > deadline:
            return None
        return max(wait, MIN_PAUSE)

    async def _take(self) -> None:
        assert self.partner is not None
        pool = self.pool
        now = now_ms()
        # The lease is renewed once half of it has gone, not at every take: a serve lasts a
        # quantum plus its open sends, far less than NOTIFIER_CLAIM_IDLE, and a renewal is two
        # writes to the shared sorted sets.
        lease_until = 0
        if self.held_until - now < pool.lease_ms // 2:
            lease_until = now + pool.lease_ms
            self.held_until = lease_until
        call = lua.take(
            shard=self.shard,
            partner=self.keys,
            consumer=pool.consumer,
            now_ms=now,
            want=self.pacer.cap() - len(self.inflight),
            limit=self.limit,
            window_ms=self.window_ms,
            ordered=self.partner.ordered,
            lease_until=lease_until,
            visible_ms=pool.visible_ms,
            pacing=self.pacer.reads(),
            most=0 if self.partner.ordered else self.pacer.max_in_flight,
            open_ms=pool.open_ms,
        )
        try:
            took = await pool.scripts.send(call)
        except BaseException:
            # The take may have run without its reply reaching us: its messages carry this
            # score in `inflight`, by which `give_back` finds them again.
            self.lost_visible.append(now + pool.visible_ms)
            raise
        # A gone stream (partner removed, or Redis flushed) is nothing to take; `release`
        # decides what that means, atomically with its check.
        self.blocked_until = took.blocked_until
        self.pacer.took(took)
        metrics = pool.metrics
        if self.blocked_until and self.limit and not took.messages and not self.partner.ordered:
            metrics.rate_limited(self.partner_id)
        if took.messages:
            metrics.in_flight(self.partner_id, len(took.messages))
        for taken in took.messages:
            task = asyncio.create_task(
                pool.sender.send(self.partner, taken.message, self.signing_keys, taken.attempt)
            )
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
        if done:
            self.pool.metrics.in_flight(self.partner_id, -len(done))
        self.pacer.forget_held(done)
        return [(self.inflight.pop(task), settle.outcome_of(task)) for task in done]

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
        done, reply = self._queue_settle(settled)
        # a transform that failed says nothing of the endpoint: no breaker, no disabling
        if not done.counts_as_failing:
            # Its reply decides nothing: the next take follows it in the same round trip, and
            # Redis runs them in order.
            return
        await self._judge(settled, await reply)

    def _queue_settle(
        self, settled: Sequence[tuple[Taken, Outcome]]
    ) -> tuple[settle.Batch, asyncio.Future[lua.Settled]]:
        done = settle.batch(
            self.shard,
            self.keys,
            settled,
            self.pool.settings.retry_schedule,
            window_ms=self.window_ms if self.limit else 0,
            retention_ms=int(self.pool.settings.message_retention * 1000),
            clear=self.clear,
            pacer=self.pacer,
        )
        self.unsettled.append(done)
        if done.failed:
            self.failures += 1
            self.clear = False
        return done, self._send_settle(done)

    def _send_settle(self, done: settle.Batch) -> asyncio.Future[lua.Settled]:
        """Send a batch's settle; once Redis confirms it, it is told (metrics, logs,
        operational events) and leaves `unsettled`."""
        reply = self.pool.scripts.send(done.call)
        self.settling.append(reply)
        failures_then = self.failures

        def confirmed(answer: asyncio.Future[lua.Settled]) -> None:
            self.settling.remove(answer)
            if answer.cancelled() or answer.exception() is not None:
                return
            if done in self.unsettled:
                self.unsettled.remove(done)
            self.teller.tell(done, answer.result())
            self.pacer.settled(answer.result())
            if not done.failed and self.failures == failures_then:
                # a success cleared the failing run and breaker, and nothing failed since
                self.clear = True
            if answer.result().breaker_closed:
                log.info("breaker closed: an attempt succeeded", partner=self.partner_id)
                self.pool.report(ops.BREAKER_CLOSED, {"partner": self.partner_id})

        reply.add_done_callback(confirmed)
        return reply

    async def _judge(self, settled: Sequence[tuple[Taken, Outcome]], reply: lua.Settled) -> None:
        """After a batch with failures, act on its verdict (`breaker.verdict`)."""
        now, settings = time.time(), self.pool.settings
        judged = breaker.verdict(
            [outcome for _, outcome in settled],
            reply.failing_since_ms,
            now,
            settings.disable_after,
            settings.retry_schedule[0],
        )
        if judged.disable is not None:
            await self._disable(judged.disable)
        if self.active and judged.trip_until_ms:
            self.tripped = True
            self.blocked_until = judged.trip_until_ms
            await breaker.open_breaker(
                self.pool.redis,
                self.keys.breaker,
                self.partner_id,
                reply.failing_since_ms,
                now,
                self.pool.report,
            )

    async def _disable(self, reason: str) -> None:
        self.active = False
        await self.pool.store.disable(self.partner_id, reason)
        log.warning("partner disabled", partner=self.partner_id, reason=reason)

    async def give_back(self) -> None:
        """Record what is unsettled, then release the partner (`lua/release.lua`)."""
        scripts = self.pool.scripts
        while self.unsettled:
            done = self.unsettled[0]
            await scripts.send(done.call)
            self.unsettled.pop(0)
            self.teller.tell(done)
        released = await scripts.send(
            lua.release(
                shard=self.shard,
                partner=self.keys,
                now_ms=now_ms(),
                blocked_until=self.blocked_until,
                active=self.active,
                held_until=self.held_until,
                lost_visible=self.lost_visible,
                retention_ms=int(self.pool.settings.message_retention * 1000),
            )
        )
        self.lost_visible = []
        if released.woke:
            self.pool.rouse(self.shard.number)
