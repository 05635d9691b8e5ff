"""Run the parts of notifier in this process until SIGTERM or SIGINT.

On a signal, the router stops reading, delivery stops taking messages, lets open requests
finish (each bounded by NOTIFIER_REQUEST_TIMEOUT) and gives its partners back; anything not
settled stays pending in Redis for another process. Nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from typing import Any

from redis.asyncio import Redis

from notifier import logs, shards
from notifier.admin import app as api
from notifier.config import Settings
from notifier.engine import supervisor
from notifier.engine.delivery import DeliveryPool
from notifier.engine.router import Router
from notifier.engine.sender import Sender
from notifier.errors import ConfigError
from notifier.redis.connection import TRANSIENT, connect, consumer_name, fatal, reason
from notifier.telemetry import Telemetry
from notifier.telemetry import observer as observe
from notifier.telemetry.observer import Observer

log = logs.get("service")


#: Where each role serves /metrics and /healthz unless NOTIFIER_METRICS_ADDR says otherwise (the
#: api serves them on its own address).
METRICS_ADDRS = {
    "run": "127.0.0.1:9100",
    "router": "127.0.0.1:9101",
    "deliver": "127.0.0.1:9102",
    "supervisor": "127.0.0.1:9102",
}

#: Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG = 20_000


def tune_gc() -> None:
    """Collect less often in a long-running process: every request allocates objects that
    CPython's default thresholds sweep for cycles hundreds of times a second. Freezing what
    start-up built keeps full collections from walking it again and again. Together they cut
    the delivery process's CPU per delivery by about a tenth (scripts/bench).
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)


async def check_redis(redis: Redis, settings: Settings) -> None:
    """Stop at once when the settings cannot reach Redis (credentials refused, a certificate
    that does not verify); wait for a Redis that is only away; warn when Redis is set up in a
    way that can lose messages.

    INFO rather than CONFIG GET: managed services refuse CONFIG, and an ACL user has no need
    of it (CONFIG GET would show it the server's own password too).
    """
    try:
        persistence = await redis.info("persistence")
        memory = await redis.info("memory")
    except TRANSIENT as exc:
        settings_wrong = fatal(exc, settings)
        if settings_wrong is not None:
            raise ConfigError(settings_wrong) from None
        log.warning("redis unreachable at start-up; will keep retrying", error=reason(exc))
        return
    except Exception:  # a Redis that refuses INFO still runs notifier
        return
    if _value(persistence, "aof_enabled") == "0":
        log.warning("redis has appendonly=no: a Redis restart can lose messages; enable AOF")
    value = _value(memory, "maxmemory_policy")
    if value != "noeviction":
        log.warning(
            "redis maxmemory-policy is not noeviction: Redis may evict messages", policy=str(value)
        )


async def open_redis(settings: Settings, name: str) -> Redis:
    """The client of this process, once `check_redis` let it start."""
    redis = connect(settings, name)
    try:
        await check_redis(redis, settings)
    except ConfigError:
        await redis.aclose()
        raise
    return redis


def _value(reply: dict[Any, Any], name: str) -> str:
    """A field of INFO's reply; a cluster's reply has one reply per node, whose worst is told."""
    nested = [_value(node, name) for node in reply.values() if isinstance(node, dict)]
    if nested:
        return next((value for value in nested if value not in ("1", "noeviction")), nested[0])
    raw = reply.get(name, "")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _roles(route: bool, deliver: bool, serve_api: bool, workers: int) -> tuple[list[str], str]:
    """The parts this process runs, and its role: what it reports to `notifier top` and which
    metrics address it takes by default."""
    roles = [
        role for role, on in (("router", route), ("deliver", deliver), ("api", serve_api)) if on
    ]
    role = "run" if len(roles) == 3 else "+".join(roles)
    if deliver and workers and not route:
        role = "supervisor"
    return roles, role


async def run(
    settings: Settings,
    *,
    route: bool,
    deliver: bool,
    serve_api: bool,
    stop: asyncio.Event | None = None,
    workers: int = 0,
) -> None:
    """Run the parts asked for until `stop` (or SIGTERM/SIGINT). With `workers`, delivery
    runs in that many child processes under a supervisor instead of in this one."""
    stop = stop or asyncio.Event()
    _on_signals(stop)
    if serve_api:
        api.check_token(settings)
    roles, role = _roles(route, deliver, serve_api, workers)
    redis = await open_redis(settings, "notifier-" + "+".join(roles))
    with contextlib.suppress(*TRANSIENT):  # Redis away at start-up: the loops wait for it
        await shards.check(redis, settings.keyspace())
    telemetry = Telemetry.start(settings.otlp_endpoint)
    observer = Observer(
        redis,
        settings.keyspace(),
        settings.ingress_stream,
        telemetry.metrics,
        role,
        consumer_name(settings.consumer),
    )
    runner = None
    metrics_runner = None
    try:
        metrics_addr = settings.metrics_addr or METRICS_ADDRS.get(role)
        if metrics_addr and metrics_addr != "none":
            metrics_runner = await observe.serve(redis, metrics_addr)
        async with Sender(settings, telemetry.tracer) as sender:
            loops = [observer.run(stop)]
            if route:
                loops.append(Router(redis, settings, telemetry).run(stop))
                loops.append(Router(redis, settings, telemetry, ops=True).run(stop))
            if deliver and workers:
                loops.append(supervisor.supervise(workers, stop, metrics_addr=metrics_addr))
            elif deliver:
                loops.append(DeliveryPool(redis, settings, sender, telemetry).run(stop))
            tasks = [asyncio.create_task(loop) for loop in loops]
            if serve_api:
                app = api.create_app(redis, settings, telemetry.metrics)
                runner = await api.serve(app, settings)
            log.info("notifier started", router=route, delivery=deliver, api=serve_api)
            await asyncio.gather(*tasks)
    finally:
        for server in (runner, metrics_runner):
            if server is not None:
                await server.cleanup()
        await redis.aclose()
        log.info("notifier stopped")
