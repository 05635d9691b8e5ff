"""What a served partner knows of its pace (`notifier.pacing`): how many requests it may have
open, whether a throttle is absorbed, and what each settle tells the pace.

The pace itself is in Redis, shared by every process; a served partner learns it from each
take and settle reply. The process also counts what each partner accepted in each of the last
few seconds, across its serves: where a new pace starts from. The most a partner accepted in
one second lately is the best guess of what it can take a second; the last second alone is
not, when the news is a timeout that took seconds to come.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from notifier import pacing
from notifier.models import Outcome, Taken, now_ms
from notifier.ratelimit import Rate
from notifier.redis import lua

#: Seconds of what a partner accepted that a process keeps.
HISTORY = 5
#: Partners whose history a process keeps; past that it starts again (a bound, not a cache
#: policy: a process serves a few hundred partners at once).
KEPT = 10_000


#: A request open this many times as long as the partner's usual answer (and HELD_MIN_MS) is
#: taken as held: a partner that holds requests past the timeout says so only a timeout
#: later, by when the requests sent meanwhile are held too and fill its concurrency.
HELD_FACTOR = 8
HELD_MIN_MS = 250


class Accepted:
    """What one partner accepted in each of the last HISTORY seconds (wall clock), and how
    long its answers usually take, in this process."""

    def __init__(self) -> None:
        self.seconds: deque[list[int]] = deque()  # [second, requests accepted in it]
        #: a moving average of its successes' answer times (0: none yet)
        self.usual_ms = 0.0

    def answered(self, latency_ms: float) -> None:
        self.usual_ms = latency_ms if not self.usual_ms else 0.9 * self.usual_ms + 0.1 * latency_ms

    def add(self, count: int, now: float) -> None:
        second = int(now)
        if self.seconds and self.seconds[-1][0] == second:
            self.seconds[-1][1] += count
        else:
            self.seconds.append([second, count])
        while self.seconds[0][0] <= second - HISTORY:
            self.seconds.popleft()

    def most(self, now: float) -> int:
        """The most accepted in one second lately (low when few seconds were counted yet: a
        new pace probes upward)."""
        return max((n for second, n in self.seconds if second > now - HISTORY), default=0)


_accepted: dict[str, Accepted] = {}


def accepted_by(partner_id: str) -> Accepted:
    """The history of a partner in this process, kept across its serves."""
    found = _accepted.get(partner_id)
    if found is None:
        if len(_accepted) >= KEPT:
            _accepted.clear()
        found = _accepted[partner_id] = Accepted()
    return found


class Pacer:
    def __init__(
        self,
        partner_id: str,
        enabled: bool,
        max_in_flight: int,
        rate: Rate | None,
        quiet_ms: int = 0,
    ) -> None:
        self.enabled = enabled
        self.max_in_flight = max_in_flight
        #: how late a throttle may be heard of (the request timeout and a second): without a
        #: rate limit a pace ends only this long after reaching its end, and a request open
        #: for half of it or more is not told as held (its timeout says so soon enough)
        self.quiet_ms = quiet_ms
        #: open requests of this serve already told to the pace as held (`tell_held`)
        self.told_held: set[object] = set()
        #: the partner's own rate limit in requests/s, 0 when it has none
        self.ceiling = rate.limit * 1000 / rate.window_ms if rate else 0.0
        #: the paced concurrency, 0 while not paced
        self.paced = 0
        #: the partner's last success this process knows of (its own, or its pace's)
        self.last_ok_ms = 0
        self.accepted = accepted_by(partner_id)

    def cap(self) -> int:
        """How many requests the partner may have open now."""
        return min(self.max_in_flight, self.paced) if self.paced else self.max_in_flight

    def reads(self) -> bool:
        """Whether takes read the pace: every take while pacing is on. A pace may start or
        end meanwhile through the settles of an earlier serve still waiting for its open
        requests, here or in another process, and one read of a missing hash costs Redis
        less than a serve at full concurrency against a partner that asked for less."""
        return self.enabled

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
        ok = [o for o in outcomes if o.ok]
        if ok:
            self.last_ok_ms = now_ms()
            self.accepted.add(len(ok), time.time())
            for outcome in ok:
                self.accepted.answered(outcome.latency_ms)

    def held_after_ms(self) -> int | None:
        """How long a request may be open before it counts as held; None when that cannot be
        told (pacing off, no answer seen yet, or no sooner than its timeout)."""
        if not self.enabled or not self.accepted.usual_ms:
            return None
        after = max(HELD_MIN_MS, int(HELD_FACTOR * self.accepted.usual_ms))
        return after if after < self.quiet_ms // 2 else None

    def _untold(self, inflight: Mapping[Any, Taken]) -> Iterator[tuple[Any, Taken]]:
        # (a serve's open requests are in the order they were taken: the oldest first)
        return ((key, taken) for key, taken in inflight.items() if key not in self.told_held)

    def until_held(self, inflight: Mapping[Any, Taken], now: int) -> float:
        """Seconds until the oldest open request not told yet counts as held (inf: never)."""
        after = self.held_after_ms()
        oldest = next(self._untold(inflight), None)
        if after is None or oldest is None:
            return math.inf
        return max(0.001, (oldest[1].taken_ms + after - now) / 1000)

    def tell_held(self, inflight: Mapping[Any, Taken], now: int) -> lua.Told | None:
        """What the pace hears of the open requests held now (`held_after_ms`), each once: a
        throttle each, as their timeouts will say later; None when there are none or the
        partner is not accepting."""
        after = self.held_after_ms()
        if after is None:
            return None
        held = list(
            itertools.takewhile(lambda k: now - k[1].taken_ms >= after, self._untold(inflight))
        )
        if not held or not self.accepting(now):
            return None
        self.told_held.update(key for key, _ in held)
        latest = max(taken.taken_ms for _, taken in held)
        return self._told(len(held), latest, 0, "held")

    def forget_held(self, done: Iterable[object]) -> None:
        """Open requests that ended."""
        self.told_held.difference_update(done)

    def absorbs(self, taken: Taken, outcome: Outcome, now: int) -> bool:
        """Whether pacing absorbs this answer: a throttle from a partner that accepted a
        request lately, to a message that has not been throttled too often already."""
        return (
            self.enabled
            and pacing.throttles(outcome)
            and taken.spared < pacing.MAX_SPARED
            and self.accepting(now)
        )

    def accepting(self, now: int) -> bool:
        """Whether the partner accepted a request lately (this serve or its pace saw one, or
        this process counted one in the last seconds): its throttles say it is overloaded.
        A partner that accepts nothing is down, not overloaded: its answers are failures on
        the retry schedule, and they neither start nor shrink a pace, which would leave it
        crawling once it is back."""
        return now - self.last_ok_ms < pacing.ABSORB_MS or self.accepted.most(now / 1000) > 0

    def told(self, settled: Sequence[tuple[Taken, Outcome]]) -> lua.Told | None:
        """What a batch tells the pace; None when nothing (pacing off, or the partner is not
        paced and nothing in the batch asks it to be)."""
        if not self.enabled:
            return None
        throttled = [o for _, o in settled if pacing.throttles(o)]
        if not self.accepting(now_ms()):
            throttled = []
        if not throttled and not self.paced:
            return None
        latest = max(throttled, key=lambda o: o.sent_ms, default=None)
        return self._told(
            len(throttled),
            latest.sent_ms if latest else 0,
            max((pacing.resume_ms(o) for o in throttled), default=0),
            pacing.why(latest) if latest else "",
        )

    def _told(self, throttles: int, latest_sent_ms: int, pause_until_ms: int, why: str) -> lua.Told:
        return lua.Told(
            max_in_flight=self.max_in_flight,
            ceiling=self.ceiling,
            throttles=throttles,
            latest_sent_ms=latest_sent_ms,
            pause_until_ms=pause_until_ms,
            accepted=self.accepted.most(time.time()),
            seen_ok_ms=self.last_ok_ms,
            why=why,
            quiet_ms=self.quiet_ms,
        )
