"""msgspec Structs for every shape that crosses a wire or is stored in Redis.

Input shapes (`PartnerIn`, `PartnerPatch`, `ReplayIn`) forbid unknown fields so a typo in an API
body is a 400 naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

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
        return "*" in self.events or event_type in self.events


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
    partner: str | None = None
    ids: list[str] | None = None


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


def utc_now() -> str:
    """Now as ISO-8601 UTC, the form of every stored and shown time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def public(partner: Partner) -> dict[str, Any]:
    """A partner as the API shows it: never the secrets."""
    shown = msgspec.to_builtins(partner)
    shown.pop("secrets", None)
    return shown  # type: ignore[no-any-return]
