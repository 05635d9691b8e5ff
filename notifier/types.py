"""Types shared across notifier's parts. This module imports nothing of notifier's, so any
module may use it without forming a cycle."""

from __future__ import annotations

from typing import Literal

#: Why something was dead-lettered, as the metrics count it: a message that failed its whole
#: retry schedule, a body the partner's transform could not make, an ingress entry that breaks
#: the rules of an ingress entry or its type's schema, one that stopped routers again and again.
DeadReason = Literal["exhausted", "transform", "malformed", "schema", "poison"]

#: The state of one message's copy to one partner.
CopyState = Literal["pending", "in_flight", "retrying", "delivered", "dead"]
COPY_STATES: tuple[CopyState, ...] = ("pending", "in_flight", "retrying", "delivered", "dead")
