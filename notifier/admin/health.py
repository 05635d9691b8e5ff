"""/healthz and /metrics: for load balancers and Prometheus, so no token."""

from __future__ import annotations

from aiohttp import web
from redis import exceptions as rx

from notifier.admin.wire import REDIS, documented, json
from notifier.models import HealthOut
from notifier.redis.connection import reason
from notifier.telemetry.metrics import prometheus_text

routes = web.RouteTableDef()


@routes.get("/healthz")
@documented("Liveness and Redis reachability", answer=HealthOut, public=True)
async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        return json(HealthOut(status="unavailable", redis=f"unreachable: {reason(exc)}"), 503)
    return json(HealthOut(status="ok", redis="ok"))


@routes.get("/metrics")
@documented("Prometheus text format", public=True)
async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=prometheus_text(), content_type="text/plain", charset="utf-8")
