"""The parsers of settings' values: text in, a typed value out, or ValueError saying what to
write instead. No message repeats the value, which may be a credential; the caller names the
variable. Every number is bounded to what Redis, Lua (doubles: exact to 2^53) and asyncio's
timers hold."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from notifier import signing

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*(ms|s|m|h|d)?\s*")
#: The longest duration any setting takes: a year.
MAX_DURATION = 365 * 86400.0
MAX_RETRIES = 50

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def duration(text: str) -> float:
    """Parse `250ms`, `5s`, `5m`, `2h`, `1d` (or bare seconds) into seconds, at most a year."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError("is not a duration like 500ms, 5s, 5m, 2h or 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_DURATION:
        raise ValueError("is longer than a year")
    return seconds


def positive_duration(value: str) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def retry_schedule(value: str) -> tuple[float, ...]:
    delays = tuple(duration(part) for part in value.split(",") if part.strip())
    if not delays:
        raise ValueError("needs at least one delay, e.g. 5s,5m,30m")
    if len(delays) > MAX_RETRIES:
        raise ValueError(f"has more than {MAX_RETRIES} delays")
    return delays


def networks(text: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in text.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{part.strip()[:50]!r} is not a network like 10.0.0.0/8 or fd00::/8"
                ) from None
    return tuple(networks)


def flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("is not a boolean (use 1 or 0)")


def fernet_key(value: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            "must be urlsafe base64 of 32 random bytes; generate one with "
            'python -c "import base64,os;'
            'print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
        )
    return value.encode()


def address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("is not host:port, e.g. 127.0.0.1:8080")
    if not host.strip("[]"):
        raise ValueError("has no host, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
    return value


def metrics_address(value: str) -> str:
    return "none" if value.strip().lower() == "none" else address(value)


def webhook_secret(value: str) -> str:
    if not signing.is_valid_secret(value):
        raise ValueError("must be whsec_ followed by base64 of at least 24 random bytes")
    return value


def whole_number(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.strip().isascii() or not value.strip().isdigit():
            raise ValueError(f"must be a whole number of {what}, from {low:,} to {high:,}")
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be from {low:,} to {high:,} {what}")
        return number

    return parse


def printable(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("must be printable text")
    return value


def log_level(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return value.lower()


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value
