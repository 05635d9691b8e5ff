"""The rules every input is checked against, in one place for the router, the API and the CLI.

An event type refused by `notifier publish` is refused by `POST /v1/partners` as a subscription
and dead-lettered by the router with the same words, so an operator never learns a rule twice.
Each function returns what is wrong, or None: callers decide whether that is a 400, a CLI error
or a dead letter. Patterns are matched whole (`fullmatch`): `$` in a `re` pattern also matches
before a final newline, which once let `order.created\\n` through.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
from yarl import URL

MAX_TYPE_LENGTH = 200
MAX_ID_LENGTH = 128
#: What Redis accepts in one string is 512 MB; events are far smaller in practice.
MAX_EVENT_BYTES = 64 * 1024 * 1024
MAX_HEADER_VALUE = 4096
#: A whole stream entry id, `<ms>-<seq>`.
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def message_id_of(entry_id: str) -> str:
    """The message id notifier gives an event whose producer gave none: from its entry."""
    return f"msg_{entry_id}"


#: Headers notifier owns; a partner's configured headers never replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)

#: The event types of notifier's operational events, which producers may not send.
OWN_TYPES = "notifier."
#: A W3C trace context `traceparent`, as bytes (it arrives in an ingress entry).
TRACEPARENT = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
#: What a hostname may hold once yarl has IDNA-encoded it; IPv6 literals are checked by yarl.
_HOSTNAME = re.compile(r"[a-z0-9_.-]+")
_TYPE = re.compile(r"[a-z0-9_.-]+")
#: RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
#: Control characters a header value may not carry (tab is allowed).
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _shown(text: str, room: int = 40) -> str:
    return repr(text if len(text) <= room else text[:room] + "...")


def event_type_problem(text: str, field: str = "type") -> str | None:
    """Why `text` is not an event type (at most 200 of `a-z0-9_.-`), or None."""
    if not text:
        return f"{field} is empty"
    if len(text) > MAX_TYPE_LENGTH:
        return f"{field} is {len(text)} characters long, at most {MAX_TYPE_LENGTH} are allowed"
    if not _TYPE.fullmatch(text):
        return (
            f"{field} {_shown(text)} may only contain lower-case letters, digits, "
            "'_', '.' and '-' (e.g. order.created)"
        )
    return None


def subscription_problem(text: str) -> str | None:
    """Why `text` is not something a partner can subscribe to: an event type or `*`."""
    if text == "*":
        return None
    return event_type_problem(text, "events: event type")


def event_id_problem(text: str) -> str | None:
    """Why `text` is not a producer's idempotency key, or None."""
    if not 0 < len(text) <= MAX_ID_LENGTH:
        return f"id must be 1 to {MAX_ID_LENGTH} characters, got {len(text)}"
    if not text.isprintable():
        return "id may only contain printable characters"
    return None


MAX_OWNER_LENGTH = 128


def owner_problem(text: str, field: str = "owner") -> str | None:
    """Why `text` is not an owner (the customer or account of an event or a partner), or
    None: the same rule for the event's field and the partner's."""
    if not 0 < len(text) <= MAX_OWNER_LENGTH:
        return f"{field} must be 1 to {MAX_OWNER_LENGTH} characters, got {len(text)}"
    if not text.isprintable():
        return f"{field} may only contain printable characters"
    return None


def check_url(url: str, *, allow_http: bool) -> str:
    """Validate a partner URL at registration time and return it normalised.

    This catches mistakes early and with a clear message; it cannot judge the destination
    address (that may change), which is left to the SSRF guard's connector
    (`notifier.engine.ssrf`), on every connection.
    """
    try:
        parsed = URL(url.strip())
    except (ValueError, TypeError) as exc:
        # The text is not echoed: it may hold a password, and messages end up in logs.
        raise ValueError(f"not a valid URL: {exc}") from exc
    # Messages quote the URL without userinfo for the same reason. Without a host yarl
    # finds no userinfo either ("user:pw@host" reads as scheme "user"), so what comes
    # before an "@" is left out.
    shown = str(parsed.with_user(None)) if parsed.raw_host else _without_userinfo(url)
    schemes = ("https", "http") if allow_http else ("https",)
    if parsed.scheme not in schemes:
        if parsed.scheme == "http":
            raise ValueError(f"{shown}: scheme must be https (http needs NOTIFIER_ALLOW_HTTP=1)")
        got = parsed.scheme or "none"
        raise ValueError(f"{shown}: scheme must be {' or '.join(schemes)}, not {got}")
    if not parsed.raw_host:
        raise ValueError(f"{shown}: has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise ValueError(
            f"{shown}: must not carry credentials (user:password@); "
            "use the partner's signing secret or headers instead"
        )
    if ":" not in parsed.raw_host and not _HOSTNAME.fullmatch(parsed.raw_host):
        raise ValueError(f"{shown}: host {parsed.raw_host!r} is not a valid hostname")
    # A fragment is never sent, so keeping it would only make equal URLs compare unequal.
    return str(parsed.with_fragment(None))


def _without_userinfo(url: str) -> str:
    _, at, rest = url.rpartition("@")
    return repr("...@" + rest if at else url)


def header_problem(name: str, value: str) -> str | None:
    """Why a partner-configured header cannot be sent, or None."""
    if not _HEADER_NAME.fullmatch(name):
        return f"headers: {_shown(name)} is not a valid header name"
    if name.lower() in RESERVED_HEADERS:
        return f"headers: {name} is set by notifier and cannot be configured"
    if _HEADER_VALUE_BAD.search(value):
        return f"headers: the value of {name!r} contains a control character or line break"
    if len(value) > MAX_HEADER_VALUE:
        return f"headers: the value of {name!r} is longer than {MAX_HEADER_VALUE} characters"
    return None


_AT = re.compile(r"^(?P<what>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)


def validation_message(exc: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.max_in_flight`" as "max_in_flight: expected
    `int` >= 1": the field first, as every other message here, for the API and the CLI."""
    text = str(exc)
    match = _AT.match(text)
    if not match:
        return text
    path = match.group("path").lstrip(".")
    what = match.group("what")
    if what.startswith("Expected"):
        what = "e" + what[1:]
    return f"{path}: {what}" if path else what


_MILLIS = re.compile(r"[0-9]{1,13}")


def moment(raw: str, name: str) -> int:
    """An ISO-8601 time (or epoch milliseconds) as epoch ms; ValueError names `name`."""
    if _MILLIS.fullmatch(raw):
        return int(raw)
    try:
        when = datetime.fromisoformat(raw)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{name}: not an ISO-8601 time like 2026-11-24T12:00:00Z") from None
