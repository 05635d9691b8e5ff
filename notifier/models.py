"""msgspec Structs for every shape that crosses a wire or is stored in Redis.

Input shapes (`PartnerIn`, `PartnerPatch`, `ReplayIn`) forbid unknown fields so a typo in an API
body is a 400 naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import msgspec

from notifier.transforms import Transform

EVENT_TYPE = r"^[a-z0-9_.-]+$"
EVENT_PATTERN = r"^([a-z0-9_.-]+|\*)$"
RATE_LIMIT = r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|seconds|minute|minutes|hour|hours)\s*$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

EventType = Annotated[str, msgspec.Meta(pattern=EVENT_TYPE, max_length=200)]
EventPattern = Annotated[str, msgspec.Meta(pattern=EVENT_PATTERN, max_length=200)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
RateLimitText = Annotated[str, msgspec.Meta(pattern=RATE_LIMIT, max_length=40)]
InFlight = Annotated[int, msgspec.Meta(ge=1, le=1000)]
HeaderMap = Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=4096)]],
                      msgspec.Meta(max_length=50)]
SecretText = Annotated[str, msgspec.Meta(pattern=r"^whsec_[A-Za-z0-9+/=]{32,}$")]
Events = Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=500)]

_HEADER_NAME = re.compile(HEADER_NAME)


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


class PartnerPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    url: Url | None = None
    events: Events | None = None
    rate_limit: RateLimitText | None = None
    max_in_flight: InFlight | None = None
    headers: HeaderMap | None = None
    transform: Transform | None = None
    enabled: bool | None = None
    ordered: bool | None = None


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


def header_problem(headers: dict[str, str]) -> str | None:
    """Why partner-configured headers are unacceptable, or None."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            return f"headers: {name!r} is not a valid header name"
        if "\r" in value or "\n" in value:
            return f"headers: the value of {name!r} contains a line break"
    return None


def public(partner: Partner) -> dict[str, Any]:
    """A partner as the API shows it: never the secrets."""
    shown = msgspec.to_builtins(partner)
    shown.pop("secrets", None)
    return shown  # type: ignore[no-any-return]
