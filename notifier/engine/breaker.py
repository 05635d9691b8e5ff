"""What a batch with failures means for its partner: disabled (gone, or failing for
NOTIFIER_DISABLE_AFTER), or its breaker tripped (every attempt failed for BREAKER_AFTER).

Decided by `verdict`, a pure function of the batch and the failing run Redis confirmed;
the served partner acts on it (`served.py`), and `open_breaker` shares a tripped breaker
with every process once Redis has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from notifier import logs, ops
from notifier.models import Outcome, iso_ms

log = logs.get("delivery")

#: After every attempt failed for this long, a partner gets only a probe batch per pause.
BREAKER_AFTER = 1.0
BREAKER_PAUSE = 30.0


class Verdict(msgspec.Struct, frozen=True):
    #: why the partner is to be disabled; None: it is not
    disable: str | None = None
    #: 0, or the ms until which the tripped breaker holds the partner back (then a probe)
    trip_until_ms: int = 0


def verdict(
    outcomes: Sequence[Outcome],
    failing_since_ms: int,
    now: float,
    disable_after: float,
    first_retry: float,
) -> Verdict:
    """The verdict on a batch, given since when every attempt has failed (0: one of the batch
    succeeded, and nothing is wrong)."""
    if not failing_since_ms:
        return Verdict()
    failing_for = now - failing_since_ms / 1000
    disable = None
    if any(outcome.gone for outcome in outcomes):
        disable = "endpoint answered 410 Gone"
    elif failing_for >= disable_after:
        disable = f"every attempt failed for {disable_after:g}s"
    if disable is not None or failing_for < BREAKER_AFTER:
        return Verdict(disable=disable)
    # Every attempt has failed for a while: the endpoint is down. Stop sending it new work,
    # and probe again after a pause, rather than spend the process's CPU on requests that
    # fail while other partners wait.
    return Verdict(trip_until_ms=int((now + min(first_retry, BREAKER_PAUSE)) * 1000))


async def open_breaker(
    redis: Any,
    key: str,
    partner_id: str,
    failing_since_ms: int,
    now: float,
    report: Callable[[str, dict[str, Any]], None],
) -> None:
    """Set the partner's shared breaker (every process, and the metrics, see it open until
    the first success); the first process to set it logs and reports it."""
    if await redis.set(key, int(now * 1000), nx=True):
        log.warning(
            "breaker opened: every attempt failed",
            partner=partner_id,
            failing_for=round(now - failing_since_ms / 1000, 3),
        )
        since = iso_ms(failing_since_ms)
        report(ops.BREAKER_OPENED, {"partner": partner_id, "failing_since": since})
