"""/v1/dead-letters: what could not be delivered, and replaying it."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import (
    AFTER,
    DEAD_LETTERS,
    LIMIT,
    SINCE,
    UNTIL,
    Query,
    decode_optional,
    documented,
    json,
    window,
)
from notifier.models import DeadLetter, Page, ReplayIn, ReplayOut

routes = web.RouteTableDef()


@routes.get("/v1/dead-letters")
@documented(
    "Dead letters, newest first",
    answer=Page[DeadLetter],
    query=(
        Query("partner", {"type": "string"}, "only this partner's"),
        LIMIT,
        AFTER,
        SINCE,
        UNTIL,
    ),
)
async def dead_letters(request: web.Request) -> web.Response:
    page = await request.app[DEAD_LETTERS].page(request.query.get("partner"), **window(request))
    return json(page)


@routes.post("/v1/dead-letters/replay")
@documented(
    "Replay dead letters: by id (dead-letter or message), a partner's, or all",
    body=ReplayIn,
    answer=ReplayOut,
)
async def replay(request: web.Request) -> web.Response:
    body = await decode_optional(request, ReplayIn, ReplayIn())
    return json(
        await request.app[DEAD_LETTERS].replay(
            everything=body.everything, partner=body.partner, ids=body.ids
        )
    )
