"""Operational events: what notifier tells operators about itself (README: Operational events).

When notifier disables or re-enables a partner, a partner's breaker opens or closes, a partner
starts being paced, a message is dead-lettered, or a rotated-out secret is about to expire, it
appends an event to
`notifier:ops` (fields `type`, `data` and an `id`, like the ingress stream). A router lane reads
that stream and routes each event like any other, so a partner may subscribe to these types,
and NOTIFIER_OPS_WEBHOOK_URL is such a partner, kept by notifier itself (`ptn_ops`), signed with
NOTIFIER_OPS_WEBHOOK_SECRET and retried like any delivery. Producers may not publish
`notifier.*` types (events.parse refuses them), so a partner can trust them.

An ops event about a message that is itself an ops event is not emitted, nor one about the ops
webhook's own pace: a failing or throttling ops webhook would otherwise report on itself for
ever.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from notifier import logs, rules
from notifier.redis import keys
from notifier.redis.connection import REDIS_ERRORS

log = logs.get("ops")

PARTNER_DISABLED = "notifier.partner.disabled"
PARTNER_ENABLED = "notifier.partner.enabled"
BREAKER_OPENED = "notifier.partner.breaker_opened"
BREAKER_CLOSED = "notifier.partner.breaker_closed"
PARTNER_PACED = "notifier.partner.paced"
DEAD_LETTERED = "notifier.message.dead_lettered"
SECRET_EXPIRING = "notifier.secret.expiring"
TYPES = (
    PARTNER_DISABLED,
    PARTNER_ENABLED,
    BREAKER_OPENED,
    BREAKER_CLOSED,
    PARTNER_PACED,
    DEAD_LETTERED,
    SECRET_EXPIRING,
)
#: The partner notifier keeps for NOTIFIER_OPS_WEBHOOK_URL.
WEBHOOK_PARTNER = "ptn_ops"
#: A rotated-out secret this close to its end is announced (once).
SECRET_WARNING_MS = 3_600_000

_encode = msgspec.json.Encoder().encode


def about_ops(event_type: str) -> bool:
    """Whether an event is one of notifier's own (no ops event is emitted about those)."""
    return event_type.startswith(rules.OWN_TYPES)


async def emit(redis: Any, event_type: str, data: dict[str, Any]) -> None:
    """Append one operational event. A Redis that fails here costs the event, not the caller:
    the event is a report about work already done."""
    try:
        await redis.xadd(
            keys.OPS,
            {"type": event_type, "data": _encode(data), "id": "ops_" + uuid.uuid4().hex},
            maxlen=keys.OPS_KEPT,
            approximate=True,
        )
    except REDIS_ERRORS as exc:
        log.warning("operational event lost", type=event_type, error=str(exc))
