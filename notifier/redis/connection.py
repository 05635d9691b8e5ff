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
from typing import Any, TypeVar

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from notifier import logs

log = logs.get("connection")

T = TypeVar("T")

#: Errors that mean "Redis is not there right now" rather than a bug.
TRANSIENT: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    OSError,
)
#: Errors of a Redis call that mean "this call did not (visibly) happen".
REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT, rx.ResponseError)


def connect(url: str, name: str = "notifier", retries: int = 3) -> Redis:
    """A client named `name` in CLIENT LIST, so operators can see which process is which."""
    client = Redis.from_url(
        url,
        client_name=name,
        decode_responses=False,
        health_check_interval=15,
        socket_keepalive=True,
        socket_connect_timeout=5,
        # Longer than any blocking read (router 4 s, delivery 2 s), so only a dead connection
        # times out; redis-py's own default (5 s) is shorter than some blocks.
        socket_timeout=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries),
        retry_on_error=[rx.ConnectionError, rx.TimeoutError],
    )
    pool = client.connection_pool
    pool.connection_class = _packed_by_hiredis(pool.connection_class)
    return client


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


def _packed_by_hiredis(base: type[AbstractConnection]) -> type[AbstractConnection]:
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
                "redis unreachable, retrying", loop=name, error=str(exc), retry_in=round(backoff, 2)
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
