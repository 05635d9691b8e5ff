"""Redis connections and the loop wrapper that survives Redis going away.

Every long-running loop runs under `keep_running`: a lost connection is logged and retried with
capped exponential backoff instead of crashing the process into a restart loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialBackoff, NoBackoff

from notifier import logs
from notifier.config import Settings
from notifier.redis import urls

log = logs.get("connection")

T = TypeVar("T")
C = TypeVar("C", bound=AbstractConnection)

#: Errors that mean "Redis is not there right now" rather than a bug. A cluster none of whose
#: nodes answers says so with a RedisClusterException of its own.
TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.RedisClusterException,
    OSError,
)
#: Errors of a Redis call that mean "this call did not (visibly) happen".
REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, rx.ResponseError)


def connect(settings: Settings, name: str = "notifier", retries: int = 3) -> Redis:
    """The one way every process builds its client, from REDIS_URL and the TLS and Cluster
    settings. The client is named `name` in CLIENT LIST, so operators can see which process is
    which. Connecting is lazy: a Redis that is away shows at the first command.

    With NOTIFIER_REDIS_CLUSTER=1 this is a `RedisCluster`, typed as a `Redis`: the two share
    the commands notifier calls (scripts, streams, hashes, sorted sets, pipelines without a
    transaction), and the callers need not tell them apart.
    """
    url = settings.redis_url
    options: dict[str, Any] = {
        "client_name": name,
        "decode_responses": False,
        "health_check_interval": 15,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        # Longer than any blocking read (router 4 s, delivery 2 s), so only a dead connection
        # times out; redis-py's own default (5 s) is shorter than some blocks.
        "socket_timeout": 15,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries),
        "retry_on_error": [rx.ConnectionError, rx.TimeoutError],
        # No CLIENT SETINFO on every connection: Redis before 7.2 has no such command, and
        # with it the ACL rule the README gives would differ by server version.
        "driver_info": None,
    }
    if urls.is_tls(url):
        options |= tls_options(settings)
    logs.hide(*urls.passwords(url))
    if settings.redis_cluster:
        return cast(Redis, _cluster(url, options))
    if urls.is_sentinel(url):
        return _sentinel(urls.sentinels(url), options)
    client = Redis.from_url(url, **options)
    pool = client.connection_pool
    pool.connection_class = _packed_by_hiredis(pool.connection_class)
    return client


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options from the settings: the CA that signs the servers' certificates
    (else the system's), and the client certificate for servers that ask for one."""
    return {
        "ssl_ca_certs": settings.redis_ca,
        "ssl_certfile": settings.redis_cert,
        "ssl_keyfile": settings.redis_key,
    }


class SentinelRedis(Redis):
    """A client of the primary a sentinel names: closing it closes its sentinels' clients too,
    which a client from `Sentinel.master_for` alone leaves open."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


def _sentinel(target: urls.Sentinels, options: dict[str, Any]) -> Redis:
    tls = {k: v for k, v in options.items() if k.startswith("ssl_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.hosts,
        sentinel_kwargs={
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "client_name": options["client_name"],
            "driver_info": None,
            # a sentinel answers at once or is down: ask the next one without waiting
            "socket_connect_timeout": 2,
            "socket_timeout": 2,
            "retry": Retry(NoBackoff(), retries=0),
            **({"ssl": True, **tls} if target.tls else {}),
        },
    )
    for asked in sentinel.sentinels:
        asked.connection_pool.connection_class = _packed_by_hiredis(
            asked.connection_pool.connection_class
        )
    base = SentinelManagedSSLConnection if target.tls else SentinelManagedConnection
    client = sentinel.master_for(
        target.service,
        redis_class=SentinelRedis,
        connection_class=_packed_by_hiredis(base),
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    client.sentinels = sentinel
    return cast(Redis, client)


def _cluster(url: str, options: dict[str, Any]) -> RedisCluster:
    client = RedisCluster.from_url(url, **options)
    # RedisCluster picks its connection class itself (TCP or TLS) and builds every node it
    # discovers later from these same arguments: packing by hiredis is set there once.
    packed = _packed_by_hiredis(client.connection_kwargs["connection_class"])
    client.connection_kwargs["connection_class"] = packed
    for node in client.startup_nodes:
        node.connection_class = packed
    return client


def reason(exc: BaseException) -> str:
    """What went wrong with Redis, for a log line or /healthz: the exception's text without a
    password, and without the long dump of every sentinel client a sentinel lookup adds."""
    text = str(exc)
    if isinstance(exc, MasterNotFoundError):
        head, _, asked = text.partition(" : ")
        if "AuthenticationError" in asked:
            return "the sentinels of REDIS_URL refused its sentinel credentials"
        text = head + " through the sentinels of REDIS_URL"
    return logs.redacted(text)


def fatal(exc: BaseException, settings: Settings) -> str | None:
    """One line naming the setting to change when `exc` says the settings cannot work, so
    that retrying would not help: credentials refused, a TLS certificate that does not verify
    or is missing, TLS spoken to a server that does not. None when Redis is just away."""
    where = f"Redis at {urls.masked(settings.redis_url)}"
    text = reason(exc)
    if isinstance(exc, rx.AuthenticationError) or text.startswith(("WRONGPASS", "NOAUTH")):
        return f"{where} refused the credentials of REDIS_URL: {text}"
    if isinstance(exc, MasterNotFoundError) and "AuthenticationError" in str(exc):
        return (
            f"the sentinels of REDIS_URL ({urls.masked(settings.redis_url)}) refused its "
            "sentinel credentials: give them as ?sentinel_password=... (&sentinel_username=...)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        detail = text.partition("certificate verify failed:")[2].partition("(_ssl")[0]
        detail = detail.strip(" .") or "certificate verify failed"
        if "mismatch" in detail:
            return (
                f"{where} presented a TLS certificate for another host ({detail}): name the "
                "server in REDIS_URL as its certificate does"
            )
        if settings.redis_ca:
            return (
                f"{where} presented a TLS certificate that NOTIFIER_REDIS_CA does not vouch for "
                f"({detail}): set NOTIFIER_REDIS_CA to the CA that signed the server's"
            )
        return (
            f"{where} presented a TLS certificate this machine does not trust ({detail}): set "
            "NOTIFIER_REDIS_CA to the PEM file of the CA that signed it"
        )
    if "CERTIFICATE_REQUIRED" in text or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
        return (
            f"{where} requires a TLS client certificate: set NOTIFIER_REDIS_CERT and "
            "NOTIFIER_REDIS_KEY"
        )
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return f"{where} does not speak TLS there: use redis:// in REDIS_URL, not rediss://"
    return None


class _HiredisPacking:
    """Commands packed into RESP by hiredis (C) rather than by redis-py's Python.

    redis-py's asyncio connections pack every argument in Python (its sync client uses
    hiredis): py-spy put 5-6 % of a delivery process's CPU there, on take and settle calls of
    tens of arguments, and hiredis does a settle's 35 in a seventh of the time. The bytes are
    the same, and what redis-py refuses (None, a bool) hiredis refuses too.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # as redis-py does: a command name may carry its subcommand ("CONFIG GET")
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise rx.DataError(str(exc)) from None


def _packed_by_hiredis(base: type[C]) -> type[C]:
    """`base` (TCP, TLS or Unix socket, as the URL says) packing with hiredis."""
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def consumer_name(configured: str = "") -> str:
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def is_nogroup(exc: BaseException) -> bool:
    """The consumer group is gone: Redis lost its data, or the stream was deleted under a
    blocked read (which Redis answers with UNBLOCKED)."""
    return isinstance(exc, rx.ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))


#: When each loop of this process last went round (monotonic), for /healthz: a loop that stops
#: going round is a process to restart, whatever else it still answers.
HEARTBEATS: dict[str, float] = {}

#: Longest pause between two tries while Redis is away: short, so work resumes within about a
#: second of Redis coming back; one connection attempt a second per loop costs nothing.
MAX_BACKOFF = 1.0


async def keep_running(
    name: str,
    step: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    on_nogroup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Call `step` until `stop` is set. No exception ends the loop: Redis going away is waited
    out with capped exponential backoff, and anything else is logged and retried the same way,
    so a bug met once costs a log line, not a process that crash-loops."""
    backoff = 0.1
    while not stop.is_set():
        HEARTBEATS[name] = time.monotonic()
        try:
            await step()
            backoff = 0.1
            continue
        except TRANSIENT as exc:
            log.warning(
                "redis unreachable, retrying",
                loop=name,
                error=reason(exc),
                retry_in=round(backoff, 2),
            )
        except rx.ResponseError as exc:
            if on_nogroup is not None and is_nogroup(exc):
                log.warning("consumer group missing, recreating it", loop=name)
                try:
                    await on_nogroup()
                    continue
                except Exception as again:
                    log.warning(
                        "could not recreate the consumer group", loop=name, error=str(again)
                    )
            else:
                log.error("redis error", loop=name, error=str(exc))
        except Exception:
            log.exception("loop step failed, retrying", loop=name)
        await pause(stop, backoff)
        backoff = min(backoff * 2, MAX_BACKOFF) * random.uniform(0.8, 1.2)
    HEARTBEATS.pop(name, None)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once on shutdown."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def until_stopped(stop: asyncio.Event, call: Awaitable[T]) -> T | None:
    """`call`'s result, or None as soon as `stop` is set (the call is then cancelled): a
    process blocked on Redis for work stops at once instead of when its block times out."""
    task = asyncio.ensure_future(call)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, *TRANSIENT):
        await task
    return None
