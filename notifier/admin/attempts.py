"""/v1/partners/{id}/attempts: a partner's recent delivery attempts, newest first."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import STORE, json, limit

routes = web.RouteTableDef()


@routes.get("/v1/partners/{id}/attempts")
async def partner_attempts(request: web.Request) -> web.Response:
    page = await request.app[STORE].attempt_page(
        request.match_info["id"], after=request.query.get("after"), limit=limit(request)
    )
    return json(page)
