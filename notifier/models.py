"""msgspec Structs for every shape that crosses a wire or is stored in Redis.

Input shapes (`PartnerIn`, `PartnerPatch`, `ReplayIn`) forbid unknown fields so a typo in an API
body is a 400 naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from notifier import ratelimit, rules, transforms
from notifier.transforms import Transform

T = TypeVar("T")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
RateLimitText = Annotated[str, msgspec.Meta(max_length=ratelimit.MAX_TEXT)]
InFlight = Annotated[int, msgspec.Meta(ge=1, le=1000)]
HeaderMap = Annotated[dict[str, str], msgspec.Meta(max_length=50)]
SecretText = Annotated[str, msgspec.Meta(max_length=200)]
Events = Annotated[list[str], msgspec.Meta(min_length=1, max_length=500)]


def _partner_problem(
    events: list[str] | None,
    headers: dict[str, str] | None,
    rate_limit: str | None,
    transform: Transform | None,
) -> None:
    """The checks PartnerIn and PartnerPatch share, raised as the body's 400 (the URL is
    checked by the store, which knows whether http:// is allowed)."""
    for pattern in events or ():
        problem = rules.subscription_problem(pattern)
        if problem:
            raise ValueError(problem)
    for name, value in (headers or {}).items():
        problem = rules.header_problem(name, value)
        if problem:
            raise ValueError(problem)
    ratelimit.parse_rate(rate_limit)
    if transform is not None:
        try:
            transforms.check(transform)
        except transforms.TransformError as exc:
            raise ValueError(f"transform: {exc}") from None


class Secret(msgspec.Struct, frozen=True):
    """A signing secret; `value` is ciphertext when NOTIFIER_SECRET_KEY is set."""

    value: str
    expires_ms: int | None = None


class Partner(msgspec.Struct, kw_only=True):
    id: str
    name: str
    url: str
    events: list[str]
    rate_limit: str | None = None
    max_in_flight: int = 10
    headers: dict[str, str] = {}
    transform: Transform | None = None
    enabled: bool = True
    ordered: bool = False
    disabled_reason: str | None = None
    created_at: str = ""
    secrets: list[Secret] = []

    def subscribes(self, event_type: str) -> bool:
        """Whether events of this type go to this partner; `*` is every type but notifier's
        own operational events (`notifier.*`), which go only to who names them."""
        if event_type in self.events:
            return True
        return "*" in self.events and not event_type.startswith(rules.OWN_TYPES)


class PartnerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    url: Url
    events: Events
    rate_limit: RateLimitText | None = None
    max_in_flight: InFlight = 10
    headers: HeaderMap = {}
    transform: Transform | None = None
    enabled: bool = True
    ordered: bool = False
    secret: SecretText | None = None

    def __post_init__(self) -> None:
        _partner_problem(self.events, self.headers, self.rate_limit, self.transform)


class PartnerPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A change: fields left out stay as they are; `null` clears `rate_limit` and
    `transform`."""

    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    events: Events | UnsetType = UNSET
    rate_limit: RateLimitText | UnsetType | None = UNSET
    max_in_flight: InFlight | UnsetType = UNSET
    headers: HeaderMap | UnsetType = UNSET
    transform: Transform | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    ordered: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        _partner_problem(
            _given(self.events),
            _given(self.headers),
            _given(self.rate_limit),
            _given(self.transform),
        )

    def changes(self) -> dict[str, Any]:
        """The fields given, by name."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


def _given(value: T | UnsetType) -> T | None:
    return None if isinstance(value, UnsetType) else value


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
    """An event published over HTTP: the fields of an ingress entry (contract section 1)."""

    type: Annotated[str, msgspec.Meta(max_length=1000)]
    data: msgspec.Raw
    id: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    traceparent: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event on its way to one partner: what a partner stream entry holds."""

    id: str  # the webhook-id, stable across retries and replays
    type: str
    timestamp: str
    data: msgspec.Raw  # the producer's JSON object, kept as text: no re-encode on the hot path
    trace: str | None = None  # W3C traceparent of the event's `route` span, when tracing


class Taken(msgspec.Struct):
    """A message taken for sending by a delivery process."""

    entry_id: str  # its entry in the partner stream
    message: Message
    attempt: int  # 1-based: the delivery count Redis keeps for the entry
    slot: str  # its member in the rate-limit window log


class Outcome(msgspec.Struct, kw_only=True):
    """What one HTTP attempt came to."""

    ok: bool
    #: Why it failed, for metrics: timeout, connection, tls, ssrf, http_3xx/4xx/5xx, other.
    kind: str | None = None
    status: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    retry_after: float | None = None
    sent_ms: int = 0  # wall clock when the request was started, for the rate-limit log
    excerpt: str | None = None  # the start of the answer's body
    trace_id: str | None = None  # of the attempt's span, when tracing, for its log lines
    span_id: str | None = None

    @property
    def gone(self) -> bool:
        return self.status == 410


class Attempt(msgspec.Struct, kw_only=True, omit_defaults=True):
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


decode_partner = msgspec.json.Decoder(Partner).decode


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


class PartnerOut(msgspec.Struct, kw_only=True):
    """A partner as the API shows it: never its secrets."""

    id: str
    name: str
    url: str
    events: list[str]
    rate_limit: str | None = None
    max_in_flight: int = 10
    headers: dict[str, str] = {}
    transform: Transform | None = None
    enabled: bool = True
    ordered: bool = False
    disabled_reason: str | None = None
    created_at: str = ""


class PartnerCreated(PartnerOut, kw_only=True):
    """A new partner, with its secret: shown this once."""

    secret: str


class SecretOut(msgspec.Struct):
    id: str
    secret: str


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


class EventOut(msgspec.Struct):
    entry_id: str
    id: str  # the message id: the webhook-id partners will see


class ErrorOut(msgspec.Struct):
    error: str


class HealthOut(msgspec.Struct):
    status: str
    redis: str


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


def public(partner: Partner) -> dict[str, Any]:
    """A partner as the API shows it: never the secrets."""
    shown = msgspec.to_builtins(partner)
    shown.pop("secrets", None)
    return shown  # type: ignore[no-any-return]
