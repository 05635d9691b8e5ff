"""Adaptive pacing: a partner that says it is overloaded is sent less, and more again as it
keeps up.

A 429, 502, 503 or 504, or a request that timed out, is a *throttle*: the partner asks for
less, it is not down. While NOTIFIER_PACING is on, each one shrinks the partner's pace, an
effective rate and concurrency that `lua/take.lua` holds it to, and every success grows it
back, until it is at the partner's own limits again (`lua/pace.lua` does the arithmetic, in the
settle that brings the news, so every delivery process paces the partner as one). A
Retry-After on a 429 or 503 pauses the whole partner until then.

Paced is not failing: a throttle the pace absorbs is retried when the pace allows, takes no
step of the message's retry schedule and counts toward neither the breaker nor disabling. A
partner that has accepted nothing for ABSORB_MS is down whatever it answers, and a message
throttled MAX_SPARED times counts its throttles again: neither is kept for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from notifier.models import Outcome, iso_ms, now_ms
from notifier.partners import Pacing, PartnerShown, public_as
from notifier.redis.keys import Keyspace

if TYPE_CHECKING:
    from notifier.store import Store

__all__ = ["Pacing"]

#: The answers that ask a sender to slow down (with timeouts): RFC 6585, and the gateway
#: answers of an overloaded upstream.
THROTTLE_STATUSES = frozenset({429, 502, 503, 504})
#: A throttle is absorbed while the partner accepted a request this recently.
ABSORB_MS = 60_000
#: Absorbed attempts a message may have; its throttles after them count as failures.
MAX_SPARED = 20
#: The window a pace is kept over for a partner without a rate limit of its own.
WINDOW_MS = 1000
#: The pace's fields the API shows: rate, concurrency, since, why, paused until.
SHOWN_FIELDS = ("r", "c", "s", "y", "p")


def throttles(outcome: Outcome) -> bool:
    """Whether an attempt's answer asks for less rather than says the partner is down."""
    return outcome.status in THROTTLE_STATUSES or outcome.kind == "timeout"


def why(outcome: Outcome) -> str:
    """A throttle in one word, as the pace keeps it."""
    return str(outcome.status) if outcome.status is not None else "timeout"


def reason(word: str) -> str:
    """A throttle as the API and the operational events say it: `HTTP 429`, `timeout`."""
    return f"HTTP {word}" if word.isdigit() else word or "timeout"


def resume_ms(outcome: Outcome) -> int:
    """When a throttled partner may be sent to again: the end of the Retry-After it asked for
    (counted from its answer), else at once (0)."""
    if outcome.retry_after is None:
        return 0
    return int(outcome.sent_ms + outcome.latency_ms + outcome.retry_after * 1000)


def shown(fields: Sequence[Any], at_ms: int) -> Pacing | None:
    """The API's view of a pace read as HMGET of SHOWN_FIELDS; None when not paced."""
    rate, concurrency, since, why, paused = fields
    if rate is None or concurrency is None:
        return None
    try:
        paused_ms = int(float(paused or 0))
        return Pacing(
            rate=round(float(rate), 2),
            concurrency=max(1, int(float(concurrency))),
            since=iso_ms(int(float(since or at_ms))),
            reason=reason((why or b"").decode(errors="replace")),
            paused_until=iso_ms(paused_ms) if paused_ms > at_ms else None,
        )
    except (ValueError, OverflowError, OSError):  # written by hand: not a pace notifier keeps
        return None


async def read(redis: Any, keyspace: Keyspace, partner_id: str) -> Pacing | None:
    """A partner's pacing now, None when it is not paced."""
    fields = await redis.hmget(keyspace.partner(partner_id).pace, SHOWN_FIELDS)
    return shown(fields, now_ms())


async def partner_shown(store: Store, partner_id: str) -> PartnerShown:
    """A partner as `GET /v1/partners/{id}` and `notifier partners show` answer it: never
    its secrets, with its pacing."""
    partner = await store.get(partner_id)
    paced = await read(store.redis, store.keyspace, partner.id)
    return public_as(partner, PartnerShown, pacing=paced)
