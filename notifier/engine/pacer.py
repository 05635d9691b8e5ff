"""What a served partner knows of its pace (`notifier.pacing`): how many requests it may have
open, whether a throttle is absorbed, and what each settle tells the pace.

The pace itself is in Redis, shared by every process; a served partner learns it from each
take and settle reply. It also counts what the partner accepted over the last second, which is
where a new pace starts from: what a partner accepted over the second before it starts
refusing is the best guess of what it can take a second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from notifier import pacing
from notifier.models import Outcome, Taken, now_ms
from notifier.ratelimit import Rate
from notifier.redis import lua

#: What the partner accepted is counted in buckets of this many seconds, over one second.
BUCKET = 0.1


class Pacer:
    def __init__(self, enabled: bool, max_in_flight: int, rate: Rate | None) -> None:
        self.enabled = enabled
        self.max_in_flight = max_in_flight
        #: the partner's own rate limit in requests/s, 0 when it has none
        self.ceiling = rate.limit * 1000 / rate.window_ms if rate else 0.0
        #: the paced concurrency, 0 while not paced
        self.paced = 0
        #: the partner's last success this process knows of (its own, or its pace's)
        self.last_ok_ms = 0
        #: (bucket number, successes) over the last second
        self.buckets: deque[list[int]] = deque()

    def cap(self) -> int:
        """How many requests the partner may have open now."""
        return min(self.max_in_flight, self.paced) if self.paced else self.max_in_flight

    def took(self, reply: lua.TakeReply) -> None:
        if reply.paced is not None:
            self.paced = reply.paced
        if reply.last_ok_ms:
            self.last_ok_ms = max(self.last_ok_ms, reply.last_ok_ms)

    def settled(self, reply: lua.Settled) -> None:
        if reply.pace != "none":
            self.paced = reply.paced

    def count(self, outcomes: Sequence[Outcome]) -> None:
        """Count a batch's answers, before its decisions are made."""
        ok = sum(1 for o in outcomes if o.ok)
        if ok:
            self.last_ok_ms = now_ms()
        bucket = int(time.monotonic() / BUCKET)
        if self.buckets and self.buckets[-1][0] == bucket:
            self.buckets[-1][1] += ok
        else:
            self.buckets.append([bucket, ok])
        while self.buckets[0][0] <= bucket - 1 / BUCKET:
            self.buckets.popleft()

    def absorbs(self, taken: Taken, outcome: Outcome, now: int) -> bool:
        """Whether pacing absorbs this answer: a throttle from a partner that accepted a
        request lately, to a message that has not been throttled too often already."""
        return (
            self.enabled
            and pacing.throttles(outcome)
            and taken.spared < pacing.MAX_SPARED
            and now - self.last_ok_ms < pacing.ABSORB_MS
        )

    def told(self, settled: Sequence[tuple[Taken, Outcome]]) -> lua.Told | None:
        """What a batch tells the pace; None when nothing (pacing off, or the partner is not
        paced and nothing in the batch asks it to be)."""
        if not self.enabled:
            return None
        throttled = [o for _, o in settled if pacing.throttles(o)]
        if not throttled and not self.paced:
            return None
        latest = max(throttled, key=lambda o: o.sent_ms, default=None)
        return lua.Told(
            max_in_flight=self.max_in_flight,
            ceiling=self.ceiling,
            throttles=len(throttled),
            latest_sent_ms=latest.sent_ms if latest else 0,
            pause_until_ms=max((pacing.resume_ms(o) for o in throttled), default=0),
            accepted=sum(b[1] for b in self.buckets),
            seen_ok_ms=self.last_ok_ms,
            why=pacing.why(latest) if latest else "",
        )
