"""/v1/dead-letters: what could not be delivered, and replaying it."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import MESSAGES, decode_optional, json, limit, moment
from notifier.models import ReplayIn

routes = web.RouteTableDef()


@routes.get("/v1/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    page = await request.app[MESSAGES].dead_letters(
        request.query.get("partner"),
        after=request.query.get("after"),
        limit=limit(request),
        since_ms=moment(request, "since"),
        until_ms=moment(request, "until"),
    )
    return json(page)


@routes.post("/v1/dead-letters/replay")
async def replay(request: web.Request) -> web.Response:
    body = await decode_optional(request, ReplayIn, ReplayIn())
    return json(
        await request.app[MESSAGES].replay(
            everything=body.everything, partner=body.partner, ids=body.ids
        )
    )
