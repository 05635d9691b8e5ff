"""/v1/dead-letters: what could not be delivered, and replaying it."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import STORE, decode_optional, json, limit
from notifier.models import ReplayIn

routes = web.RouteTableDef()


@routes.get("/v1/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    letters = await request.app[STORE].dead_letters(request.query.get("partner"), limit(request))
    return json(letters)


@routes.post("/v1/dead-letters/replay")
async def replay(request: web.Request) -> web.Response:
    body = await decode_optional(request, ReplayIn, ReplayIn())
    count = await request.app[STORE].replay(body.partner, body.ids)
    return json({"replayed": count})
