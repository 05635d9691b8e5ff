"""Settings: one declaration per environment variable, read once and checked at start-up.

Each field of `Settings` carries its whole declaration in one place: the variable's name, the
parser that checks it, its default (the field's own) and the help the README shows. The loader,
the start-up errors and the README's table (`notifier settings --markdown`, compared with the
README by a test) all come from these declarations, so they cannot drift apart.

Every bad value stops start-up with a message naming the variable and what to write instead,
so an operator never finds a typo hours later through a delivery that behaves oddly. A rejected
value is never repeated when it may be a secret, and URLs are shown without their password.
Every number is bounded to what Redis, Lua (doubles: exact to 2^53) and asyncio's timers hold.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_type_hints
from urllib.parse import urlsplit, urlunsplit

import msgspec

from notifier import rules, signing
from notifier.errors import ConfigError as ConfigError  # raised by load()
from notifier.redis import keys
from notifier.redis.keys import Keyspace

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*(ms|s|m|h|d)?\s*")
#: The longest duration any setting takes: a year.
MAX_DURATION = 365 * 86400.0
MAX_RETRIES = 50
MAX_CONCURRENCY = 100_000
#: Shards on a Cluster unless NOTIFIER_SHARDS says otherwise: five or so per primary of a
#: three-primary Cluster, so a primary added later can take some.
CLUSTER_SHARDS = 16

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Env:
    """The declaration of one setting, attached to its `Settings` field with Annotated."""

    name: str
    parse: Callable[[str], Any]
    help: str
    #: The default as the README shows it; empty: the field's default, in backquotes.
    shown: str = ""
    #: Never repeat the value in an error: it may be a credential.
    secret: bool = False


# Parsers: each raises ValueError with what to write instead, never repeating the value.


def parse_duration(text: str) -> float:
    """Parse `250ms`, `5s`, `5m`, `2h`, `1d` (or bare seconds) into seconds, at most a year."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError("is not a duration like 500ms, 5s, 5m, 2h or 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_DURATION:
        raise ValueError("is longer than a year")
    return seconds


def _positive_duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _schedule(value: str) -> tuple[float, ...]:
    delays = tuple(parse_duration(part) for part in value.split(",") if part.strip())
    if not delays:
        raise ValueError("needs at least one delay, e.g. 5s,5m,30m")
    if len(delays) > MAX_RETRIES:
        raise ValueError(f"has more than {MAX_RETRIES} delays")
    return delays


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
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


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("is not a boolean (use 1 or 0)")


def _secret_key(value: str) -> bytes:
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


def _addr(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("is not host:port, e.g. 127.0.0.1:8080")
    if not host.strip("[]"):
        raise ValueError("has no host, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
    return value


def _metrics_addr(value: str) -> str:
    return "none" if value.strip().lower() == "none" else _addr(value)


def _webhook_secret(value: str) -> str:
    if not signing.is_valid_secret(value):
        raise ValueError("must be whsec_ followed by base64 of at least 24 random bytes")
    return value


def _whole(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.strip().isascii() or not value.strip().isdigit():
            raise ValueError(f"must be a whole number of {what}, from {low:,} to {high:,}")
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be from {low:,} to {high:,} {what}")
        return number

    return parse


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    try:
        parts = urlsplit(value)
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("is not a URL like redis://host:6379/0") from None
    if database and not (database.isascii() and database.isdigit()):
        raise ValueError("has a database index that is not a number (the path after the port)")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if not value.isprintable():
        raise ValueError("must be printable text")
    return value


def _level(value: str) -> str:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return value.lower()


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


def masked(url: str) -> str:
    """`url` without the password it may carry, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")
        user = netloc[0].partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
    except ValueError:
        return "(unparseable URL)"


_DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: Annotated[str, Env("REDIS_URL", _redis_url, "the Redis to use", secret=True)] = (
        "redis://127.0.0.1:6379/0"
    )
    admin_token: Annotated[
        str | None,
        Env("NOTIFIER_ADMIN_TOKEN", _text, "bearer token of the admin API", "none", secret=True),
    ] = None
    api_addr: Annotated[str, Env("NOTIFIER_API_ADDR", _addr, "where the admin API listens")] = (
        "127.0.0.1:8080"
    )
    metrics_addr: Annotated[
        str | None,
        Env(
            "NOTIFIER_METRICS_ADDR",
            _metrics_addr,
            "where `run`, `router` and `deliver` serve `/metrics` and `/healthz`; by role "
            "`127.0.0.1:9100` (run), `:9101` (router), `:9102` (deliver; with `--processes N` "
            "its workers take the next N ports); `none` for no server. The `api` serves both "
            "on `NOTIFIER_API_ADDR`",
            "by role",
        ),
    ] = None
    api_local_only: Annotated[
        bool,
        Env(
            "NOTIFIER_API_LOCAL_ONLY",
            _flag,
            "let the API run without a token, on loopback only",
            "`0`",
        ),
    ] = False
    ingress_stream: Annotated[
        str, Env("NOTIFIER_INGRESS_STREAM", _text, "the stream producers XADD to")
    ] = "notifier:events"
    retry_schedule: Annotated[
        tuple[float, ...],
        Env(
            "NOTIFIER_RETRY_SCHEDULE",
            _schedule,
            "delays before each retry (+0-10 % jitter), at most 50",
            "`5s,5m,30m,2h,5h,10h,10h`",
        ),
    ] = _DEFAULT_SCHEDULE
    request_timeout: Annotated[
        float,
        Env(
            "NOTIFIER_REQUEST_TIMEOUT",
            _positive_duration,
            "total time for one delivery request",
            "`10s`",
        ),
    ] = 10.0
    claim_idle: Annotated[
        float,
        Env(
            "NOTIFIER_CLAIM_IDLE",
            _positive_duration,
            "after this, a message held by a dead process is retried by another; must be longer "
            "than the request timeout",
            "`60s`",
        ),
    ] = 60.0
    allowed_networks: Annotated[
        tuple[IPNetwork, ...],
        Env(
            "NOTIFIER_ALLOWED_NETWORKS",
            parse_networks,
            "comma-separated CIDRs exempt from the SSRF guard",
            "empty",
        ),
    ] = ()
    allow_http: Annotated[
        bool, Env("NOTIFIER_ALLOW_HTTP", _flag, "accept `http://` partner URLs", "`0`")
    ] = False
    secret_key: Annotated[
        bytes | None,
        Env(
            "NOTIFIER_SECRET_KEY",
            _secret_key,
            "urlsafe base64 of 32 random bytes (a Fernet key); partner secrets are then "
            "encrypted at rest",
            "none",
            secret=True,
        ),
    ] = None
    secret_overlap: Annotated[
        float,
        Env(
            "NOTIFIER_SECRET_OVERLAP",
            parse_duration,
            "how long a rotated-out secret keeps signing",
            "`24h`",
        ),
    ] = 86400.0
    max_event_bytes: Annotated[
        int,
        Env(
            "NOTIFIER_MAX_EVENT_BYTES",
            _whole(1, rules.MAX_EVENT_BYTES, "bytes"),
            "larger events are dead-lettered",
        ),
    ] = 262144
    message_retention: Annotated[
        float,
        Env(
            "NOTIFIER_MESSAGE_RETENTION",
            parse_duration,
            "how long a message can be looked up, listed, resent and recovered (Redis keeps "
            "about 300 bytes per message plus its event's data, `scripts/bench` 8d); `0` keeps "
            "no index",
            "`7d`",
        ),
    ] = 7 * 86400.0
    disable_after: Annotated[
        float,
        Env(
            "NOTIFIER_DISABLE_AFTER",
            _positive_duration,
            "a partner whose every attempt failed for this long is disabled",
            "`5d`",
        ),
    ] = 5 * 86400.0
    #: Concurrent partners one delivery process serves; the rest wait their turn in `ready`.
    concurrency: Annotated[
        int,
        Env(
            "NOTIFIER_CONCURRENCY",
            _whole(1, MAX_CONCURRENCY, "partners"),
            "partners one delivery process serves at once",
        ),
    ] = 256
    consumer: Annotated[
        str,
        Env(
            "NOTIFIER_CONSUMER",
            _text,
            "consumer name of this process in the consumer groups",
            "`<host>-<pid>`",
        ),
    ] = ""
    otlp_endpoint: Annotated[
        str | None,
        Env(
            "NOTIFIER_OTLP_ENDPOINT",
            _url,
            "OTLP/gRPC endpoint (e.g. `http://otel-collector:4317`) for metrics and traces",
            "none",
        ),
    ] = None
    ops_webhook_url: Annotated[
        str | None,
        Env(
            "NOTIFIER_OPS_WEBHOOK_URL",
            _url,
            "where operational events are POSTed (a partner notifier keeps, `ptn_ops`)",
            "none",
        ),
    ] = None
    ops_webhook_secret: Annotated[
        str | None,
        Env(
            "NOTIFIER_OPS_WEBHOOK_SECRET",
            _webhook_secret,
            "`whsec_...`: signs operational events (Standard Webhooks)",
            "none",
            secret=True,
        ),
    ] = None
    redis_cluster: Annotated[
        bool,
        Env(
            "NOTIFIER_REDIS_CLUSTER",
            _flag,
            "`1`: `REDIS_URL` names any node of a Redis Cluster; notifier finds the others and "
            "follows slot moves and failovers",
            "`0`",
        ),
    ] = False
    shards: Annotated[
        int | None,
        Env(
            "NOTIFIER_SHARDS",
            _whole(1, keys.MAX_SHARDS, "shards"),
            "how many shards partners are spread over, each a hash slot of its own on a Redis "
            "Cluster; fixed for a deployment (changing it: README, Production Redis)",
            "`1`; `16` on a Cluster",
        ),
    ] = None
    log_level: Annotated[
        str, Env("NOTIFIER_LOG_LEVEL", _level, "`debug`, `info`, `warning`, `error`")
    ] = "info"

    def keyspace(self) -> Keyspace:
        """The key map of this deployment."""
        count = self.shards or (CLUSTER_SHARDS if self.redis_cluster else 1)
        return Keyspace(count, cluster=self.redis_cluster)

    @property
    def api_host_port(self) -> tuple[str, int]:
        host, _, port = self.api_addr.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def declarations() -> dict[str, Env]:
    """Field name -> its declaration, in the order of `Settings`."""
    hints = get_type_hints(Settings, include_extras=True)
    return {
        field: next(m for m in hints[field].__metadata__ if isinstance(m, Env))
        for field in Settings.__struct_fields__
    }


def table() -> str:
    """The README's settings table, from the declarations."""
    defaults = {f.name: f.default for f in msgspec.structs.fields(Settings)}
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field, env in declarations().items():
        shown = env.shown or f"`{defaults[field]}`"
        lines.append(f"| `{env.name}` | {shown} | {env.help} |")
    return "\n".join(lines)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise ConfigError naming every bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    errors: list[str] = []
    for field, decl in declarations().items():
        raw = env.get(decl.name)
        if raw is None or (raw == "" and decl.name != "NOTIFIER_ALLOWED_NETWORKS"):
            continue
        try:
            values[field] = decl.parse(raw)
        except ValueError as exc:
            shown = "" if decl.secret else f"={raw[:60]!r}"
            if decl.name == "REDIS_URL":
                shown = f"={masked(raw)[:100]!r}"
            errors.append(f"{decl.name}{shown} {exc}")
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.claim_idle <= settings.request_timeout:
        errors.append(
            f"NOTIFIER_CLAIM_IDLE ({settings.claim_idle:g}s) must be longer than "
            f"NOTIFIER_REQUEST_TIMEOUT ({settings.request_timeout:g}s), or a slow request "
            "still running would be claimed and sent twice"
        )
    if settings.ops_webhook_url:
        try:
            rules.check_url(settings.ops_webhook_url, allow_http=settings.allow_http)
        except ValueError as exc:
            errors.append(f"NOTIFIER_OPS_WEBHOOK_URL {exc}")
    if settings.ops_webhook_url and not settings.ops_webhook_secret:
        errors.append(
            "NOTIFIER_OPS_WEBHOOK_URL needs NOTIFIER_OPS_WEBHOOK_SECRET to sign what it sends"
        )
    if errors:
        raise ConfigError("; ".join(errors))
    return settings
