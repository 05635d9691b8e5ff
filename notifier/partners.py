"""Partners as they are stored, given and shown: the record (`Partner`), the API's and CLI's
input (`PartnerIn`, `PartnerPatch`, which forbid unknown fields, so a typo is a 400 naming the
field) and the answers (`PartnerOut` and its kin, never a secret but the one shown once).
`notifier.models` re-exports them beside every other shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from notifier import filters, ratelimit, rules, transforms
from notifier.transforms import Transform

T = TypeVar("T")

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
RateLimitText = Annotated[str, msgspec.Meta(max_length=ratelimit.MAX_TEXT)]
InFlight = Annotated[int, msgspec.Meta(ge=1, le=1000)]
HeaderMap = Annotated[dict[str, str], msgspec.Meta(max_length=50)]
SecretText = Annotated[str, msgspec.Meta(max_length=200)]
Events = Annotated[list[str], msgspec.Meta(min_length=1, max_length=500)]
OwnerText = Annotated[str, msgspec.Meta(max_length=1000)]
FilterSpec = Annotated[dict[str, Any], msgspec.Meta(max_length=200)]
#: How requests are signed: `v1` HMAC-SHA256 with a `whsec_` secret, `v1a` ed25519.
Signature = Literal["v1", "v1a"]


def _partner_problem(
    events: list[str] | None,
    headers: dict[str, str] | None,
    rate_limit: str | None,
    transform: Transform | None,
    owner: str | None = None,
    spec: dict[str, Any] | None = None,
) -> None:
    """The checks PartnerIn and PartnerPatch share, raised as the body's 400 (the URL is
    checked by the store, which knows whether http:// is allowed)."""
    if owner is not None:
        problem = rules.owner_problem(owner)
        if problem:
            raise ValueError(problem)
    if spec is not None:
        try:
            filters.check(spec)
        except filters.FilterError as exc:
            raise ValueError(str(exc)) from None
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


class Secret(msgspec.Struct, frozen=True, omit_defaults=True):
    """A signing key: a `whsec_` secret (v1) or a `whsk_` ed25519 private key (v1a), whose
    `value` is ciphertext when NOTIFIER_SECRET_KEY is set; `public` is a v1a key's `whpk_`
    public key, which may be shown."""

    value: str
    expires_ms: int | None = None
    public: str | None = None

    def signs_at(self, now_ms: int) -> bool:
        """Whether it still signs: it has no end yet (the newest), or its overlap runs on."""
        return self.expires_ms is None or self.expires_ms > now_ms


class PartnerFields(msgspec.Struct, kw_only=True):
    """What a partner is, as stored and as shown (its keys apart)."""

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
    owner: str | None = None
    filter: dict[str, Any] | None = None
    signature: Signature = "v1"


class Partner(PartnerFields, kw_only=True):
    """The stored record: the fields and the signing keys (sealed)."""

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
    owner: OwnerText | None = None
    filter: FilterSpec | None = None
    signature: Signature = "v1"

    def __post_init__(self) -> None:
        _partner_problem(
            self.events, self.headers, self.rate_limit, self.transform, self.owner, self.filter
        )
        if self.signature == "v1a" and self.secret is not None:
            raise ValueError("secret: a v1a partner's key pair is made by notifier; leave it out")


class PartnerPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A change: fields left out stay as they are; `null` clears `rate_limit`, `transform`,
    `owner` and `filter`, and sets `signature` back to v1."""

    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    events: Events | UnsetType = UNSET
    rate_limit: RateLimitText | UnsetType | None = UNSET
    max_in_flight: InFlight | UnsetType = UNSET
    headers: HeaderMap | UnsetType = UNSET
    transform: Transform | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    ordered: bool | UnsetType = UNSET
    owner: OwnerText | UnsetType | None = UNSET
    filter: FilterSpec | UnsetType | None = UNSET
    signature: Signature | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        _partner_problem(
            _given(self.events),
            _given(self.headers),
            _given(self.rate_limit),
            _given(self.transform),
            _given(self.owner),
            _given(self.filter),
        )
        if self.signature is None:
            self.signature = "v1"

    def changes(self) -> dict[str, Any]:
        """The fields given, by name."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not UNSET
        }


def _given(value: T | UnsetType) -> T | None:
    return None if isinstance(value, UnsetType) else value


decode_partner = msgspec.json.Decoder(Partner).decode


class PartnerOut(PartnerFields, kw_only=True):
    """A partner as the API shows it: never its secrets."""

    #: v1a: `whpk_` + base64 of the ed25519 public key that verifies its requests
    public_key: str | None = None


#: What PartnerOut shows of the record as it is.
_SHOWN = PartnerFields.__struct_fields__


class Pacing(msgspec.Struct, kw_only=True):
    """How notifier paces a partner that said it was overloaded: below its own limits."""

    #: requests per second notifier sends it at most now
    rate: float
    #: requests open at once at most now
    concurrency: int
    #: since when it has been paced (ISO-8601 UTC)
    since: str
    #: the answer that last slowed it down: `HTTP 429`, `HTTP 502`, `HTTP 503`, `HTTP 504`
    #: or `timeout`
    reason: str
    #: a Retry-After it sent pauses it until then (ISO-8601 UTC); null when not paused
    paused_until: str | None = None


class PartnerShown(PartnerOut, kw_only=True):
    """A partner as `GET /v1/partners/{id}` shows it: with how notifier paces it."""

    #: while notifier holds the partner below its limits because it said it was overloaded
    #: (README, Pacing); null otherwise
    pacing: Pacing | None = None


class PartnerCreated(PartnerOut, kw_only=True):
    """A new partner, with its secret (v1; shown this once), or the public key of its key
    pair (v1a; the private key is never shown)."""

    secret: str | None = None


class PartnerUpdated(PartnerOut, kw_only=True):
    """A changed partner; a change of `signature` to v1 made a new secret, shown this once
    (left out otherwise)."""

    secret: str | UnsetType = UNSET


class SecretOut(msgspec.Struct):
    """A rotation: the new secret (v1, shown this once) or the new public key (v1a)."""

    id: str
    secret: str | None = None
    public_key: str | None = None


Shown = TypeVar("Shown", bound=PartnerOut)


def public(partner: Partner) -> PartnerOut:
    """A partner as the API shows it: never the secrets; a v1a partner's current public key."""
    return public_as(partner, PartnerOut)


def public_as(partner: Partner, kind: type[Shown], **extra: Any) -> Shown:
    """`public`, as a kin of PartnerOut that adds `extra` (a secret shown once)."""
    fields = {name: getattr(partner, name) for name in _SHOWN}
    return kind(**fields, public_key=public_key(partner), **extra)


def public_key(partner: Partner) -> str | None:
    """The `whpk_` key that verifies a v1a partner's newest signatures."""
    if partner.signature != "v1a":
        return None
    return next((s.public for s in partner.secrets if s.public), None)
