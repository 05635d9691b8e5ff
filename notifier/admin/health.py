"""/healthz and /metrics: for load balancers and Prometheus, so no token."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import REDIS, documented, json
from notifier.models import HealthOut
from notifier.telemetry.metrics import prometheus_text
from notifier.telemetry.observer import health

routes = web.RouteTableDef()


@routes.get("/healthz")
@documented(
    "The process: 200 while Redis answers and its loops go round, else 503 naming what is wrong",
    answer=HealthOut,
    public=True,
)
async def healthz(request: web.Request) -> web.Response:
    answer = await health(request.app[REDIS])
    return json(answer, 200 if answer.status == "ok" else 503)


@routes.get("/metrics")
@documented("Prometheus text format", public=True)
async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=prometheus_text(), content_type="text/plain", charset="utf-8")
