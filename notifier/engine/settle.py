"""Settling a batch of attempts: what each came to, decided by a pure function, written by one
`lua/settle.lua` call, and told (metrics, logs, operational events) once Redis has it.

A settle call that fails is sent again (a process that lost Redis settles once it is back), so
nothing that describes the outcome may happen when the call is built: counted then, a
settle sent twice was counted twice, and a dead letter announced that Redis never wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from notifier import logs, ops, pacing, retry
from notifier.engine.pacer import Pacer
from notifier.models import Attempt, Outcome, Taken, iso_ms, utc_now
from notifier.ratelimit import slice_of
from notifier.redis import lua
from notifier.redis.keys import PartnerKeys, Shard
from notifier.telemetry.metrics import Metrics
from notifier.types import DeadReason

log = logs.get("delivery")

_encode = msgspec.json.Encoder().encode

Verdict = Literal["delivered", "retry", "dead"]


class Decision(msgspec.Struct, frozen=True):
    """What one attempt came to, and what becomes of its message."""

    taken: Taken
    outcome: Outcome
    verdict: Verdict
    record: bytes  # the encoded Attempt
    due_ms: int = 0  # retry: when
    reason: str = ""  # dead: why
    wait: float = 0.0  # retry: seconds from now
    spared: bool = False  # retry: a throttle pacing absorbed, no step of the schedule


def decide(
    taken: Taken,
    outcome: Outcome,
    schedule: Sequence[float],
    now: float,
    at: str,
    absorbed: bool = False,
) -> Decision:
    """The fate of one attempt's message: delivered, retried at a time, or dead-lettered.
    A throttle pacing `absorbed` is retried as soon as the partner may be sent to again, and
    an attempt pacing absorbed earlier took no step of the schedule."""
    record = _encode(
        Attempt(
            message_id=taken.message.id,
            event_type=taken.message.type,
            attempt=taken.attempt,
            at=at,
            status=outcome.status,
            latency_ms=round(outcome.latency_ms, 2),
            ok=outcome.ok,
            error=outcome.error,
        )
    )
    if outcome.ok:
        return Decision(taken, outcome, "delivered", record)
    if outcome.kind == "transform":
        # a body that could not be made was not sent, and a retry would make it no better
        return Decision(taken, outcome, "dead", record, reason=str(outcome.error))
    if absorbed:
        due_ms = max(int(now * 1000), pacing.resume_ms(outcome))
        return Decision(
            taken, outcome, "retry", record, due_ms=due_ms, wait=due_ms / 1000 - now, spared=True
        )
    wait = retry.delay(taken.attempt - taken.spared, schedule, outcome.retry_after)
    if wait is None and outcome.gone:
        # the partner is being disabled: keep the message for when it is back
        wait = schedule[-1]
    if wait is None:
        paced = f" ({taken.spared} of them throttled and paced)" if taken.spared else ""
        reason = f"gave up after {taken.attempt} attempts{paced}: {outcome.error}"
        return Decision(taken, outcome, "dead", record, reason=reason)
    return Decision(taken, outcome, "retry", record, due_ms=int((now + wait) * 1000), wait=wait)


@dataclass
class Batch:
    """One settle on its way: its call (sent again until Redis confirms it) and what it
    records, told once."""

    decisions: list[Decision]
    call: lua.Call[lua.Settled]
    told: bool = False

    @property
    def failed(self) -> bool:
        return any(d.verdict != "delivered" for d in self.decisions)

    @property
    def counts_as_failing(self) -> bool:
        """Some attempt failed at the endpoint (a transform that failed says nothing of it,
        nor does a throttle pacing absorbed)."""
        return any(_failed_at_endpoint(d) for d in self.decisions)


def _failed_at_endpoint(d: Decision) -> bool:
    return d.verdict != "delivered" and d.outcome.kind != "transform" and not d.spared


def batch(
    shard: Shard,
    partner: PartnerKeys,
    settled: Sequence[tuple[Taken, Outcome]],
    schedule: Sequence[float],
    *,
    window_ms: int,
    retention_ms: int,
    clear: bool,
    pacer: Pacer,
) -> Batch:
    """The decisions of a batch of outcomes, and the `lua/settle.lua` call that records them.
    `window_ms`: the partner's rate-limit window (0: no limit); `retention_ms`: the message
    index's (0: none). `clear`: the partner's failing run and breaker are known not to be
    set."""
    at, now = utc_now(), time.time()
    pacer.count([outcome for _, outcome in settled])
    decisions = [
        decide(t, o, schedule, now, at, pacer.absorbs(t, o, int(now * 1000))) for t, o in settled
    ]
    dead = [d for d in decisions if d.verdict == "dead"]
    retries = [d for d in decisions if d.verdict == "retry"]
    call = lua.settle(
        shard=shard,
        partner=partner,
        now_ms=int(now * 1000),
        delivered=[d.taken.entry_id for d in decisions if d.verdict == "delivered"],
        retries=[lua.Retry(d.taken.entry_id, d.due_ms, d.record, d.spared) for d in retries],
        dead=[
            lua.Dead(d.taken.entry_id, d.reason, _encode(d.taken.message), d.record, at)
            for d in dead
        ],
        # A slot is stamped when it is taken; moving it to when its answer came keeps a
        # request that waited (for the CPU, or in the partner's queue) from landing within a
        # window of the next ones by any clock of the partner's. Those answered in the slice
        # they were taken in need no move.
        moved=[
            (d.taken.entry_id, d.taken.taken_ms, d.outcome.answered_ms)
            for d in decisions
            if slice_of(d.outcome.answered_ms, window_ms) > slice_of(d.taken.taken_ms, window_ms)
        ]
        if window_ms
        else [],
        window_ms=window_ms,
        records=[d.record for d in decisions],
        index=_index_updates(decisions) if retention_ms else (),
        retention_ms=retention_ms,
        retried=any(d.taken.attempt > 1 for d in decisions),
        maybe_failing=not clear or bool(retries or dead),
        endpoint_failed=any(_failed_at_endpoint(d) for d in decisions),
        told=pacer.told(settled),
    )
    return Batch(decisions, call)


#: A verdict as the message index records it (`lua/settle.lua`).
_INDEXED: dict[Verdict, Literal["d", "r", "x"]] = {"delivered": "d", "retry": "r", "dead": "x"}


def _index_updates(decisions: Sequence[Decision]) -> list[lua.IndexUpdate]:
    """What the message index learns of a batch: each dead letter and retry, and a delivery
    after a retry, with its attempt count (a look-up finds where a copy is, not how often it
    was tried). A delivery at the first attempt, the common case, writes nothing: a copy that
    left its stream without a dead letter was delivered, once unless the index says more."""
    return [
        lua.IndexUpdate(d.taken.message.id, d.taken.entry_id, _INDEXED[d.verdict], d.taken.attempt)
        for d in decisions
        if d.verdict != "delivered" or d.taken.attempt > 1
    ]


@dataclass
class Teller:
    """Where a confirmed batch is told: the process's metrics and its operational events."""

    metrics: Metrics
    report: Callable[[str, dict[str, Any]], None]
    partner_id: str

    def tell(self, done: Batch, settled: lua.Settled | None = None) -> None:
        """Metrics, logs and operational events of a batch Redis has recorded, once; with
        Redis's reply, the pace it started or ended."""
        if done.told:
            return
        done.told = True
        if settled is not None:
            self._paced(done, settled)
        pid = self.partner_id
        self.metrics.attempts(pid, [(d.taken, d.outcome) for d in done.decisions])
        for d in done.decisions:
            if d.verdict == "retry":
                # a throttle pacing absorbed is the pace at work, not news
                (log.debug if d.spared else log.info)(
                    "delivery failed, will retry",
                    trace_id=d.outcome.trace_id,
                    span_id=d.outcome.span_id,
                    partner=pid,
                    message_id=d.taken.message.id,
                    attempt=d.taken.attempt,
                    status=d.outcome.status,
                    error=d.outcome.error,
                    retry_in=round(d.wait, 3),
                )
            elif d.verdict == "dead":
                self._dead(d)

    def _paced(self, done: Batch, settled: lua.Settled) -> None:
        """A pace that started or ended with a batch Redis has recorded."""
        pid = self.partner_id
        if settled.pace == "started":
            throttled = [d.outcome for d in done.decisions if pacing.throttles(d.outcome)]
            reason = pacing.reason(pacing.why(throttled[-1]) if throttled else "")
            paused = iso_ms(settled.paused_until_ms) if settled.paused_until_ms else None
            log.warning(
                "partner paced: it asked for less",
                partner=pid,
                reason=reason,
                rate=settled.paced_rate,
                concurrency=settled.paced,
                paused_until=paused,
            )
            if pid != ops.WEBHOOK_PARTNER:
                self.report(
                    ops.PARTNER_PACED,
                    {
                        "partner": pid,
                        "reason": reason,
                        "rate": settled.paced_rate,
                        "concurrency": settled.paced,
                        "paused_until": paused,
                    },
                )
        elif settled.pace == "ended":
            log.info("pacing ended: the partner is back at its own limits", partner=pid)

    def _dead(self, d: Decision) -> None:
        log.warning(
            "message dead-lettered",
            trace_id=d.outcome.trace_id,
            span_id=d.outcome.span_id,
            partner=self.partner_id,
            message_id=d.taken.message.id,
            attempt=d.taken.attempt,
            status=d.outcome.status,
            reason=d.reason,
        )
        kind: DeadReason = "transform" if d.outcome.kind == "transform" else "exhausted"
        self.metrics.dead_lettered(self.partner_id, kind)
        if not ops.about_ops(d.taken.message.type):
            self.report(
                ops.DEAD_LETTERED,
                {
                    "partner": self.partner_id,
                    "message_id": d.taken.message.id,
                    "event_type": d.taken.message.type,
                    "attempts": d.taken.attempt,
                    "reason": d.reason,
                },
            )


def told_only(
    shard: Shard, partner: PartnerKeys, told: lua.Told, now_ms: int
) -> lua.Call[lua.Settled]:
    """A settle of no outcomes that only tells the pace something (requests held open)."""
    return lua.settle(
        shard=shard,
        partner=partner,
        now_ms=now_ms,
        delivered=[],
        retries=[],
        dead=[],
        moved=[],
        window_ms=0,
        records=[],
        retried=False,
        maybe_failing=False,
        endpoint_failed=False,
        told=told,
    )


def outcome_of(task: asyncio.Task[Outcome]) -> Outcome:
    """A send's outcome; a send that was cancelled or broke is a failed attempt, not a crash."""
    if task.cancelled():
        return Outcome(ok=False, kind="other", error="request cancelled")
    exc = task.exception()
    if exc is not None:
        return Outcome(ok=False, kind="other", error=f"{type(exc).__name__}: {exc}"[:500])
    return task.result()
