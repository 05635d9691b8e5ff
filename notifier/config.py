"""Settings: one object, read from the environment once, validated at start-up.

Every bad value stops start-up with a message naming the variable, so an operator never finds a
typo hours later through a delivery that behaves oddly.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping

import msgspec

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting has a value notifier cannot use; the message names the variable."""


def parse_duration(text: str) -> float:
    """Parse `250ms`, `5s`, `5m`, `2h`, `1d` (or bare seconds) into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 5s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: str | None = None
    api_addr: str = "127.0.0.1:8080"
    ingress_stream: str = "notifier:events"
    retry_schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    request_timeout: float = 10.0
    claim_idle: float = 60.0
    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False
    secret_key: bytes | None = None
    secret_overlap: float = 86400.0
    max_event_bytes: int = 262144
    disable_after: float = 5 * 86400.0
    #: Concurrent partners one delivery process serves; the rest wait their turn in `ready`.
    concurrency: int = 256
    #: Lets the admin API start without a token; only for a loopback-only development setup.
    api_local_only: bool = False
    consumer: str = ""
    otlp_endpoint: str | None = None
    log_level: str = "info"

    @property
    def api_host_port(self) -> tuple[str, int]:
        host, _, port = self.api_addr.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not a boolean (use 1 or 0)")


def _positive_duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _schedule(value: str) -> tuple[float, ...]:
    delays = tuple(parse_duration(part) for part in value.split(",") if part.strip())
    if not delays:
        raise ValueError("needs at least one delay, e.g. 5s,5m,30m")
    return delays


def _secret_key(value: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("is not urlsafe base64") from exc
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)}")
    return value.encode()


def _addr(value: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return value


def _stream(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _level(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return value.lower()


_PARSERS: dict[str, tuple[str, object]] = {
    "REDIS_URL": ("redis_url", _redis_url),
    "NOTIFIER_ADMIN_TOKEN": ("admin_token", str),
    "NOTIFIER_API_ADDR": ("api_addr", _addr),
    "NOTIFIER_INGRESS_STREAM": ("ingress_stream", _stream),
    "NOTIFIER_RETRY_SCHEDULE": ("retry_schedule", _schedule),
    "NOTIFIER_REQUEST_TIMEOUT": ("request_timeout", _positive_duration),
    "NOTIFIER_CLAIM_IDLE": ("claim_idle", _positive_duration),
    "NOTIFIER_ALLOWED_NETWORKS": ("allowed_networks", parse_networks),
    "NOTIFIER_ALLOW_HTTP": ("allow_http", _flag),
    "NOTIFIER_SECRET_KEY": ("secret_key", _secret_key),
    "NOTIFIER_SECRET_OVERLAP": ("secret_overlap", parse_duration),
    "NOTIFIER_MAX_EVENT_BYTES": ("max_event_bytes", _positive_int),
    "NOTIFIER_DISABLE_AFTER": ("disable_after", _positive_duration),
    "NOTIFIER_CONCURRENCY": ("concurrency", _positive_int),
    "NOTIFIER_API_LOCAL_ONLY": ("api_local_only", _flag),
    "NOTIFIER_CONSUMER": ("consumer", str),
    "NOTIFIER_OTLP_ENDPOINT": ("otlp_endpoint", str),
    "NOTIFIER_LOG_LEVEL": ("log_level", _level),
}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise ConfigError naming every bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    errors: list[str] = []
    for var, (field, parse) in _PARSERS.items():
        raw = env.get(var)
        if raw is None or (raw == "" and var != "NOTIFIER_ALLOWED_NETWORKS"):
            continue
        try:
            values[field] = parse(raw)  # type: ignore[operator]
        except ValueError as exc:
            errors.append(f"{var}={raw!r}: {exc}")
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.claim_idle <= settings.request_timeout:
        errors.append(
            f"NOTIFIER_CLAIM_IDLE ({settings.claim_idle:g}s) must be longer than "
            f"NOTIFIER_REQUEST_TIMEOUT ({settings.request_timeout:g}s), or a slow request "
            "still running would be claimed and sent twice")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return settings
