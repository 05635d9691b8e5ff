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

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_type_hints

import msgspec

from notifier import rules
from notifier.errors import ConfigError as ConfigError  # raised by load()
from notifier.parsers import MAX_DURATION as MAX_DURATION
from notifier.parsers import IPNetwork as IPNetwork
from notifier.parsers import (
    address,
    fernet_key,
    flag,
    http_url,
    log_level,
    metrics_address,
    positive_duration,
    printable,
    retry_schedule,
    webhook_secret,
    whole_number,
)
from notifier.parsers import duration as parse_duration
from notifier.parsers import networks as parse_networks
from notifier.redis import keys, urls
from notifier.redis.keys import Keyspace
from notifier.redis.urls import masked as masked

MAX_CONCURRENCY = 100_000
#: Shards on a Cluster unless NOTIFIER_SHARDS says otherwise: five or so per primary of a
#: three-primary Cluster, so a primary added later can take some.
CLUSTER_SHARDS = 16


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


_DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: Annotated[
        str,
        Env(
            "REDIS_URL",
            urls.check_url,
            "the Redis to use: `redis://`, `rediss://` (TLS), `unix://`, or "
            "`redis+sentinel://[user:password@]host:port[,host:port...]/<service name>[/db]` "
            "(`rediss+sentinel://` for TLS): the primary is found through the sentinels and "
            "followed across failovers (see Production Redis)",
            secret=True,
        ),
    ] = "redis://127.0.0.1:6379/0"
    redis_ca: Annotated[
        str | None,
        Env(
            "NOTIFIER_REDIS_CA",
            urls.check_file,
            "PEM file of the CA certificates that sign the Redis servers' (and sentinels') TLS "
            "certificates; without it, the system's CAs",
            "none",
        ),
    ] = None
    redis_cert: Annotated[
        str | None,
        Env(
            "NOTIFIER_REDIS_CERT",
            urls.check_file,
            "client certificate (PEM) for Redis servers that require TLS client authentication",
            "none",
        ),
    ] = None
    redis_key: Annotated[
        str | None,
        Env(
            "NOTIFIER_REDIS_KEY",
            urls.check_file,
            "the client certificate's private key (PEM, unencrypted)",
            "none",
        ),
    ] = None
    redis_cluster: Annotated[
        bool,
        Env(
            "NOTIFIER_REDIS_CLUSTER",
            flag,
            "`1`: `REDIS_URL` names any node of a Redis Cluster; notifier finds the others and "
            "follows slot moves and failovers",
            "`0`",
        ),
    ] = False
    admin_token: Annotated[
        str | None,
        Env(
            "NOTIFIER_ADMIN_TOKEN", printable, "bearer token of the admin API", "none", secret=True
        ),
    ] = None
    api_addr: Annotated[str, Env("NOTIFIER_API_ADDR", address, "where the admin API listens")] = (
        "127.0.0.1:8080"
    )
    metrics_addr: Annotated[
        str | None,
        Env(
            "NOTIFIER_METRICS_ADDR",
            metrics_address,
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
            flag,
            "let the API run without a token, on loopback only",
            "`0`",
        ),
    ] = False
    ingress_stream: Annotated[
        str, Env("NOTIFIER_INGRESS_STREAM", printable, "the stream producers XADD to")
    ] = "notifier:events"
    retry_schedule: Annotated[
        tuple[float, ...],
        Env(
            "NOTIFIER_RETRY_SCHEDULE",
            retry_schedule,
            "delays before each retry (+0-10 % jitter), at most 50",
            "`5s,5m,30m,2h,5h,10h,10h`",
        ),
    ] = _DEFAULT_SCHEDULE
    request_timeout: Annotated[
        float,
        Env(
            "NOTIFIER_REQUEST_TIMEOUT",
            positive_duration,
            "total time for one delivery request",
            "`10s`",
        ),
    ] = 10.0
    claim_idle: Annotated[
        float,
        Env(
            "NOTIFIER_CLAIM_IDLE",
            positive_duration,
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
        bool, Env("NOTIFIER_ALLOW_HTTP", flag, "accept `http://` partner URLs", "`0`")
    ] = False
    secret_key: Annotated[
        bytes | None,
        Env(
            "NOTIFIER_SECRET_KEY",
            fernet_key,
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
            whole_number(1, rules.MAX_EVENT_BYTES, "bytes"),
            "larger events are dead-lettered",
        ),
    ] = 262144
    message_retention: Annotated[
        float,
        Env(
            "NOTIFIER_MESSAGE_RETENTION",
            parse_duration,
            "how long a message can be looked up, listed, resent and recovered (Redis keeps its "
            "event once and about 110-220 bytes per message and partner, `scripts/bench` "
            "8d-8f); `0` keeps no index",
            "`7d`",
        ),
    ] = 7 * 86400.0
    disable_after: Annotated[
        float,
        Env(
            "NOTIFIER_DISABLE_AFTER",
            positive_duration,
            "a partner whose every attempt failed for this long is disabled",
            "`5d`",
        ),
    ] = 5 * 86400.0
    pacing: Annotated[
        bool,
        Env(
            "NOTIFIER_PACING",
            flag,
            "`1`: a partner that answers 429, 502, 503, 504 or times out is paced: sent less, "
            "then more as it keeps up, a Retry-After pauses it; while it still accepts "
            "requests, those answers take no step of the retry schedule and count toward "
            "neither the breaker nor disabling (README, Pacing). `0`: they are failed "
            "attempts like any other",
            "`1`",
        ),
    ] = True
    #: Concurrent partners one delivery process serves; the rest wait their turn in `ready`.
    concurrency: Annotated[
        int,
        Env(
            "NOTIFIER_CONCURRENCY",
            whole_number(1, MAX_CONCURRENCY, "partners"),
            "partners one delivery process serves at once",
        ),
    ] = 256
    consumer: Annotated[
        str,
        Env(
            "NOTIFIER_CONSUMER",
            printable,
            "consumer name of this process in the consumer groups",
            "`<host>-<pid>`",
        ),
    ] = ""
    otlp_endpoint: Annotated[
        str | None,
        Env(
            "NOTIFIER_OTLP_ENDPOINT",
            http_url,
            "OTLP/gRPC endpoint (e.g. `http://otel-collector:4317`) for metrics and traces",
            "none",
        ),
    ] = None
    ops_webhook_url: Annotated[
        str | None,
        Env(
            "NOTIFIER_OPS_WEBHOOK_URL",
            http_url,
            "where operational events are POSTed (a partner notifier keeps, `ptn_ops`)",
            "none",
        ),
    ] = None
    ops_webhook_secret: Annotated[
        str | None,
        Env(
            "NOTIFIER_OPS_WEBHOOK_SECRET",
            webhook_secret,
            "`whsec_...`: signs operational events (Standard Webhooks)",
            "none",
            secret=True,
        ),
    ] = None
    shards: Annotated[
        int | None,
        Env(
            "NOTIFIER_SHARDS",
            whole_number(1, keys.MAX_SHARDS, "shards"),
            "how many shards partners are spread over, each a hash slot of its own on a Redis "
            "Cluster; fixed for a deployment (changing it: README, Production Redis)",
            "`1`; `16` on a Cluster",
        ),
    ] = None
    log_level: Annotated[
        str, Env("NOTIFIER_LOG_LEVEL", log_level, "`debug`, `info`, `warning`, `error`")
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
    # the variables already reported are left out of the checks of how they go together
    failed = {error.partition("=")[0].partition(" ")[0] for error in errors}
    errors += urls.problems(
        None if "REDIS_URL" in failed else settings.redis_url,
        env.get("NOTIFIER_REDIS_CA") if "NOTIFIER_REDIS_CA" in failed else settings.redis_ca,
        env.get("NOTIFIER_REDIS_CERT") if "NOTIFIER_REDIS_CERT" in failed else settings.redis_cert,
        env.get("NOTIFIER_REDIS_KEY") if "NOTIFIER_REDIS_KEY" in failed else settings.redis_key,
        settings.redis_cluster,
        failed,
    )
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
