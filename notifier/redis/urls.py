"""REDIS_URL and the TLS files, read and checked before anything connects.

`REDIS_URL` is one of

    redis://[user:password@]host:port[/db]          plain TCP
    rediss://[user:password@]host:port[/db]         TLS
    unix://[user:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[user:password@]host:port[,host:port...]/<service name>[/db]
    rediss+sentinel://...                           the same over TLS, sentinels and data nodes

The user and password of a sentinel URL are the data nodes' (where notifier's keys are); the
sentinels' own, when they require one, are the query parameters `sentinel_username` and
`sentinel_password`. Everything here is pure: it never connects, and no message it makes repeats
a password.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
#: The port Sentinel listens on unless told otherwise.
SENTINEL_PORT = 26379
#: Query parameters of a sentinel URL (the others go to redis-py for plain URLs).
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:/]+))(?::(?P<port>[^:]*))?")


@dataclass(frozen=True)
class Sentinels:
    """A `redis+sentinel://` URL, read: where the sentinels are and what to ask them for."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def is_tls(url: str) -> bool:
    return scheme(url) in ("rediss", "rediss+sentinel")


def is_sentinel(url: str) -> bool:
    return scheme(url).endswith("+sentinel")


def masked(url: str) -> str:
    """`url` without any password it carries, for logs and messages.

    A password need not be escaped by whoever wrote the URL, so it may hold `/`, `?`, `#` or
    `@`: the user info is taken to end at the last `@` of the whole URL, never at the first
    separator, and everything after its first `:` is hidden. Query parameters that name a
    password (`password=`, `sentinel_password=`) are hidden too.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)" if "@" in url or "password" in url.lower() else url
    userinfo, at, tail = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{tail}" if colon else f"{user}@{tail}"
    path, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{part.partition('=')[0]}=***"
            if "password" in part.partition("=")[0].lower()
            else part
            for part in query.split("&")
        )
        rest = f"{path}?{query}"
    return f"{head}://{rest}"


def passwords(url: str) -> list[str]:
    """Every password a URL carries, decoded: its user info's, and the query parameters that
    name one (as `masked` hides them)."""
    userinfo, at, rest = url.partition("://")[2].rpartition("@")
    found = [unquote(userinfo.partition(":")[2])] if at and ":" in userinfo else []
    query = rest.partition("?")[2]
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if "password" in k.lower()]
    return [secret for secret in found if secret]


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError("has a port that is not a number from 1 to 65535")
    return int(text)


def _host(text: str, default_port: int) -> tuple[str, int]:
    match = _HOST.fullmatch(text.strip())
    if not match:
        raise ValueError("has a host that is not host:port (IPv6 in brackets: [::1]:26379)")
    host = match.group("v6") or match.group("name")
    return host, _port(match.group("port") or "", default_port)


def _db(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError("has a database index that is not a number (the path after the port)")
    return int(text)


def sentinels(url: str) -> Sentinels:
    """Read a `redis+sentinel://` URL; ValueError says what is wrong without repeating it."""
    rest = url.partition("://")[2]
    userinfo, at, rest = rest.rpartition("@")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if not netloc:
        raise ValueError("names no sentinel: redis+sentinel://host:26379[,host:port...]/<service>")
    hosts = tuple(_host(part, SENTINEL_PORT) for part in netloc.split(","))
    parts = [unquote(p) for p in path.split("/")] if path else []
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not parts[0]:
        raise ValueError(
            "names no service: add /<service name> (as in sentinel.conf) after the hosts"
        )
    if len(parts) > 2:
        raise ValueError("has more than /<service name>/<db> after the hosts")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS))
    if unknown:
        raise ValueError(
            f"has an unknown query parameter {unknown[0][:40]!r}: a sentinel URL takes only "
            + " and ".join(SENTINEL_OPTIONS)
        )
    user, colon, password = userinfo.partition(":")
    return Sentinels(
        hosts=hosts,
        service=parts[0],
        db=_db(parts[1]) if len(parts) == 2 else 0,
        username=(unquote(user) or None) if at else None,
        password=unquote(password) if at and colon else None,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        tls=is_tls(url),
    )


def check_url(value: str) -> str:
    """REDIS_URL's parser: the URL unchanged, or ValueError saying what to write instead."""
    kind = scheme(value)
    if kind not in SCHEMES:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
        )
    userinfo, _, rest = value.partition("://")[2].rpartition("@")
    if any(char in userinfo for char in "/?#"):
        # urllib (and so redis-py) would end the host at it and read the rest of the
        # password as a host, a port or a path, and then name it in an error
        raise ValueError(
            "has a user or password holding / ? or # unescaped: write them %2F, %3F, %23"
        )
    if is_sentinel(value):
        sentinels(value)
        return value
    rest = rest.partition("?")[0]
    if kind == "unix":
        if not rest.startswith("/"):
            raise ValueError("needs the socket's absolute path: unix:///run/redis/redis.sock")
        return value
    netloc, _, path = rest.partition("/")
    if not netloc:
        raise ValueError("is not a URL like redis://host:6379/0")
    _host(netloc, 6379)
    if path.strip("/"):
        _db(path.strip("/"))
    return value


def database(url: str) -> int:
    """The database index a plain or sentinel URL names (0 when it names none)."""
    if is_sentinel(url):
        return sentinels(url).db
    path = url.partition("://")[2].rpartition("@")[2].partition("?")[0].partition("/")[2]
    if scheme(url) == "unix" or not path.strip("/"):
        return 0
    return _db(path.strip("/"))


def check_file(value: str) -> str:
    """A TLS setting's parser: the path of a readable PEM file."""
    path = Path(value)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in text:
        raise ValueError("is not a PEM file (no -----BEGIN line)")
    return value


def problems(
    url: str | None,
    ca: str | None,
    cert: str | None,
    key: str | None,
    cluster: bool,
    failed: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """What cannot work in these settings together, one message each, naming the variables.
    `url` is None, and the files named in `failed` are not read, when their own parser
    already refused them: one mistake, one message."""
    found: list[str] = []
    files = [
        name
        for name, value in (
            ("NOTIFIER_REDIS_CA", ca),
            ("NOTIFIER_REDIS_CERT", cert),
            ("NOTIFIER_REDIS_KEY", key),
        )
        if value
    ]
    if url is not None and files and not is_tls(url):
        found.append(
            f"{' and '.join(files)} need a TLS REDIS_URL (rediss:// or rediss+sentinel://); "
            f"REDIS_URL is {scheme(url)}://, which would not use them"
        )
    if bool(cert) != bool(key):
        given, missing = ("NOTIFIER_REDIS_CERT", "NOTIFIER_REDIS_KEY")[:: 1 if cert else -1]
        found.append(f"{given} needs {missing}: a client certificate goes with its private key")
    if ca and "NOTIFIER_REDIS_CA" not in failed:
        try:
            ssl.create_default_context().load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError):
            found.append("NOTIFIER_REDIS_CA holds no CA certificate notifier can read (PEM)")
    if cert and key and not failed & {"NOTIFIER_REDIS_CERT", "NOTIFIER_REDIS_KEY"}:
        try:
            # a password callback that gives none: an encrypted key fails here, not at a prompt
            ssl.create_default_context().load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, OSError):
            found.append(
                "NOTIFIER_REDIS_CERT and NOTIFIER_REDIS_KEY are not a certificate and its "
                "unencrypted private key (PEM)"
            )
    if cluster and url is not None:
        found += _cluster_problems(url)
    return found


def _cluster_problems(url: str) -> list[str]:
    if is_sentinel(url):
        return [
            "NOTIFIER_REDIS_CLUSTER=1 cannot use a sentinel REDIS_URL: a Redis Cluster finds "
            "its own primaries; give redis:// or rediss:// and any node of the cluster"
        ]
    if scheme(url) == "unix":
        return ["NOTIFIER_REDIS_CLUSTER=1 needs a redis:// or rediss:// REDIS_URL"]
    if database(url):
        return ["NOTIFIER_REDIS_CLUSTER=1 needs database 0 in REDIS_URL: a cluster has no other"]
    return []
