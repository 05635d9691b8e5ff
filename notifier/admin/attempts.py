"""/v1/partners/{id}/attempts: a partner's recent delivery attempts, newest first."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import AFTER, LIMIT, STORE, documented, json, limit
from notifier.models import Attempt, Page

routes = web.RouteTableDef()


@routes.get("/v1/partners/{id}/attempts")
@documented("A partner's recent attempts, newest first", answer=Page[Attempt], query=(LIMIT, AFTER))
async def partner_attempts(request: web.Request) -> web.Response:
    page = await request.app[STORE].attempt_page(
        request.match_info["id"], after=request.query.get("after"), limit=limit(request)
    )
    return json(page)
