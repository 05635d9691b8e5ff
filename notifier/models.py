"""msgspec Structs for every shape that crosses a wire or is stored in Redis.

Input shapes (`PartnerIn`, `PartnerPatch`, `ReplayIn`) forbid unknown fields so a typo in an API
body is a 400 naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Generic, TypeVar

import msgspec

from notifier.partners import (
    Partner,
    PartnerCreated,
    PartnerIn,
    PartnerOut,
    PartnerPatch,
    PartnerShown,
    PartnerUpdated,
    Secret,
    SecretOut,
    Signature,
    decode_partner,
    public,
    public_as,
    public_key,
)

#: The partner shapes live in notifier.partners; they are named here too, beside the rest.
__all__ = [
    "Partner",
    "PartnerCreated",
    "PartnerIn",
    "PartnerOut",
    "PartnerPatch",
    "PartnerShown",
    "PartnerUpdated",
    "Secret",
    "SecretOut",
    "Signature",
    "decode_partner",
    "public",
    "public_as",
    "public_key",
]

T = TypeVar("T")


class RotateIn(msgspec.Struct, forbid_unknown_fields=True):
    secret: str | None = None  # bring your own; otherwise one is generated


class ReplayIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What to replay: dead-letter entry ids or message ids, one partner's, or all."""

    everything: bool = msgspec.field(name="all", default=False)
    partner: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    ids: (
        Annotated[
            list[Annotated[str, msgspec.Meta(max_length=200)]], msgspec.Meta(max_length=10_000)
        ]
        | None
    ) = None


class RecoverIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Resend what failed or was dead-lettered, of messages routed in [since, until]."""

    since: Annotated[str, msgspec.Meta(max_length=64)] | int  # ISO-8601, or epoch ms
    until: Annotated[str, msgspec.Meta(max_length=64)] | int | None = None


class EventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An event published over HTTP: the fields of an ingress entry (README: Publishing)."""

    type: Annotated[str, msgspec.Meta(max_length=1000)]
    data: msgspec.Raw
    id: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    traceparent: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    owner: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event on its way to one partner: what a partner stream entry holds."""

    id: str  # the webhook-id, stable across retries and replays
    type: str
    timestamp: str
    data: msgspec.Raw  # the producer's JSON object, kept as text: no re-encode on the hot path
    trace: str | None = None  # W3C traceparent of the event's `route` span, when tracing
    owner: str | None = None  # the customer or account it belongs to (not in the body)


class Taken(msgspec.Struct):
    """A message taken for sending by a delivery process."""

    entry_id: str  # its entry in the partner stream
    message: Message
    attempt: int  # 1-based: the delivery count Redis keeps for the entry
    taken_ms: int  # when it was taken: its rate-limit slot's stamp until it is settled
    spared: int = 0  # its earlier attempts pacing absorbed: they took no step of the schedule


class Outcome(msgspec.Struct, kw_only=True):
    """What one HTTP attempt came to."""

    ok: bool
    #: Why it failed, for metrics: timeout, connection, tls, ssrf, http_3xx/4xx/5xx, other;
    #: `transform` when the body could not be made (nothing was sent): that message is
    #: dead-lettered at once with `error` as the reason, never retried.
    kind: str | None = None
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    retry_after: float | None = None
    sent_ms: int = 0  # wall clock when the request was started
    excerpt: str | None = None  # the start of the answer's body
    trace_id: str | None = None  # of the attempt's span, when tracing, for its log lines
    span_id: str | None = None

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def answered_ms(self) -> int:
        """Wall clock when its answer (or failure) came: the partner had the request by then,
        whatever its own clock said, so the rate-limit window counts it from here."""
        return self.sent_ms + math.ceil(self.latency_ms)


class Attempt(msgspec.Struct, kw_only=True):
    """One POST of a message. Every field is always shown (null when there is none), so an
    attempt has one shape whatever its outcome."""

    message_id: str
    event_type: str
    attempt: int
    at: str
    status: int | None = None  # HTTP status; None when no response came
    latency_ms: float
    ok: bool
    error: str | None = None


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str  # the dead stream entry id
    reason: str
    partner: str | None = None
    message: Message | None = None
    attempts: list[Attempt] = []
    entry: dict[str, str] | None = None  # the raw ingress fields of a malformed event
    at: str = ""


class Delivery(msgspec.Struct, kw_only=True):
    """One message's copy for one partner: where it stands."""

    partner: str
    state: str  # pending | in_flight | retrying | delivered | dead
    attempts: int = 0  # made so far
    updated_at: str  # when it reached this state (ISO-8601 UTC)
    next_attempt_at: str | None = None  # retrying: when
    dead_letter_id: str | None = None  # dead: the entry of notifier:dead
    history: list[Attempt] = []  # its attempts still in the partner's attempt log


class MessageView(msgspec.Struct, kw_only=True):
    """A message (its `webhook-id`): the event, and its copy for each partner it went to."""

    id: str
    type: str
    timestamp: str
    data: msgspec.Raw
    deliveries: list[Delivery]


class PartnerMessage(msgspec.Struct, kw_only=True):
    """A message in a partner's list."""

    id: str
    type: str
    timestamp: str
    routed_at: str
    state: str
    attempts: int = 0
    next_attempt_at: str | None = None
    dead_letter_id: str | None = None


class Page(msgspec.Struct, Generic[T]):
    """Every list route's answer: `next` is the cursor of the following page, or null."""

    data: list[T]
    next: str | None = None


class ReplayOut(msgspec.Struct):
    replayed: int
    not_found: list[str]


class RecoverOut(msgspec.Struct):
    resent: int
    ids: list[str]
    complete: bool  # false when it stopped at its cap: ask again


class ResendOut(msgspec.Struct):
    id: str
    partner: str
    entry_id: str


class TestOut(msgspec.Struct):
    ok: bool
    status: int | None
    latency_ms: float
    excerpt: str | None
    error: str | None

    @classmethod
    def of(cls, outcome: Outcome) -> TestOut:
        """How a test ping went, as the API and the CLI show it."""
        return cls(
            outcome.ok, outcome.status, round(outcome.latency_ms, 2), outcome.excerpt, outcome.error
        )


class EventOut(msgspec.Struct):
    entry_id: str
    id: str  # the message id: the webhook-id partners will see


class ErrorOut(msgspec.Struct):
    error: str


class HealthOut(msgspec.Struct, omit_defaults=True):
    """How a process is: `ok` while Redis answers and each of its loops went round lately."""

    status: str  # ok | unavailable
    redis: str  # ok | unreachable: <why>
    #: each loop of the process (router, delivery, observer...): ok | stalled for <n>s
    loops: dict[str, str] = {}


def iso_ms(ms: int | float) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds."""
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def now_ms() -> int:
    """Now in epoch milliseconds, the unit of every time kept in Redis."""
    return int(time.time() * 1000)


def utc_now() -> str:
    """Now as ISO-8601 UTC, the form of every stored and shown time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
