"""What one process tells operators: `/metrics` and `/healthz` on an address of its own, the
deployment's shared gauges while it is the metrics leader, and its counters for `notifier top`.

Every process (router, deliver, run, api) runs an Observer. Every REPORT_EVERY it publishes its
per-partner counters to `notifier:processes`, which is how `notifier top` sees a split
deployment without knowing where each process listens. Every SNAPSHOT_EVERY it tries to hold
`notifier:metrics:leader`; the holder reads the backlog snapshot (`backlog.py`, O(partners with
work)) that its shared gauges report, and the others report none, so a scrape costs nothing
and no backlog is counted twice. The leader also adds what the processes counted since its
last look to the per-minute history the console charts (`history.py`). A leader that dies
lets the lock run out, and another process takes over.

`/healthz` answers 200 when Redis answers and every loop of the process went round recently
(`connection.HEARTBEATS`), 503 naming what is wrong otherwise: a process to restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from notifier import logs
from notifier.errors import ListenError
from notifier.models import HealthOut
from notifier.redis import keys, lua
from notifier.redis.connection import HEARTBEATS, REDIS_ERRORS, keep_running, pause, reason
from notifier.redis.keys import Keyspace
from notifier.redis.lua import Scripts
from notifier.telemetry.backlog import read_snapshot
from notifier.telemetry.history import History
from notifier.telemetry.metrics import Metrics, prometheus_text
from notifier.telemetry.reports import REPORT_EVERY, REPORT_STALE, ProcessReport

log = logs.get("observer")

SNAPSHOT_EVERY = 5.0
LEADER_TTL_MS = 30_000
#: A loop that has not gone round for this long makes /healthz fail.
LOOP_STALE = 30.0

_encode = msgspec.json.Encoder().encode


class Observer:
    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        ingress: str,
        metrics: Metrics,
        role: str,
        name: str = "",
    ) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.ingress = ingress
        self.metrics = metrics
        self.role = role
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.scripts = Scripts(redis)
        self.leader = False
        self.history = History(redis)
        self._next_snapshot = 0.0
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await keep_running("observer", self.step, stop)
        with contextlib.suppress(*REDIS_ERRORS):  # leave no stale report behind
            await self.redis.hdel(keys.PROCESSES, self.name)

    async def step(self) -> None:
        await self.report()
        if time.monotonic() >= self._next_snapshot:
            self._next_snapshot = time.monotonic() + SNAPSHOT_EVERY
            await self.lead()
        await pause(self._stop, REPORT_EVERY)

    async def report(self) -> None:
        report = ProcessReport(
            name=self.name,
            role=self.role,
            at=time.time(),
            routed=self.metrics.routed_total,
            dead=self.metrics.dead_total,
            partners=self.metrics.totals,
        )
        await self.redis.hset(keys.PROCESSES, self.name, _encode(report))

    async def lead(self) -> None:
        """Hold the leader lock if free or ours; as leader, read the deployment's state."""
        self.leader = await self.scripts.run(
            lua.hold(lock=keys.METRICS_LEADER, me=self.name, ttl_ms=LEADER_TTL_MS)
        )
        if not self.leader:
            self.metrics.snapshot = None
            self.history.forget()
            return
        self.metrics.snapshot = await read_snapshot(self.redis, self.keyspace, self.ingress)
        await self.history.record(await self._fresh_reports())

    async def _fresh_reports(self) -> dict[str, ProcessReport]:
        """Every process's report, by name, once the stale ones are removed."""
        client: Any = self.redis
        stale, fresh = [], {}
        for name, raw in (await client.hgetall(keys.PROCESSES)).items():
            try:
                report = msgspec.json.decode(raw, type=ProcessReport)
            except (msgspec.DecodeError, msgspec.ValidationError):
                report = None
            if report is None or time.time() - report.at > REPORT_STALE:
                stale.append((name, raw))
            else:
                fresh[name.decode(errors="replace")] = report
        if stale:
            # only if each is still the report read: a process that reported meanwhile stays
            await self.scripts.run(lua.forget_reports(stale=stale))
        return fresh


async def health(redis: Redis) -> HealthOut:
    """Whether this process is well: Redis answers, and every loop went round recently. The
    api's /healthz and the metrics server's answer it alike."""
    try:
        await redis.ping()
        reached = "ok"
    except REDIS_ERRORS as exc:
        reached = f"unreachable: {reason(exc)}"
    now = time.monotonic()
    loops = {
        loop: "ok" if now - beat < LOOP_STALE else f"stalled for {now - beat:.0f}s"
        for loop, beat in sorted(HEARTBEATS.items())
    }
    well = reached == "ok" and all(value == "ok" for value in loops.values())
    return HealthOut(status="ok" if well else "unavailable", redis=reached, loops=loops)


def _routes(redis: Redis) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        answer = await health(redis)
        return web.Response(
            body=_encode(answer),
            status=200 if answer.status == "ok" else 503,
            content_type="application/json",
        )

    @routes.get("/metrics")
    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=prometheus_text(), content_type="text/plain", charset="utf-8")

    return routes


async def serve(redis: Redis, addr: str) -> web.AppRunner:
    """`/metrics` and `/healthz` on `addr` (NOTIFIER_METRICS_ADDR)."""
    app = web.Application()
    app.add_routes(_routes(redis))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = addr.rpartition(":")
    try:
        await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(
            f"cannot listen on NOTIFIER_METRICS_ADDR={addr}: {exc.strerror or exc}; choose a "
            "free port, or 'none' for no metrics server"
        ) from None
    log.info("metrics listening", addr=addr)
    return runner
