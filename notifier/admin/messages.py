"""/v1/messages and a partner's messages: look up, list, resend, recover."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import (
    AFTER,
    LIMIT,
    MESSAGES,
    SINCE,
    UNTIL,
    Query,
    decode,
    documented,
    json,
    parse_moment,
    window,
)
from notifier.models import MessageView, Page, PartnerMessage, RecoverIn, RecoverOut, ResendOut
from notifier.types import COPY_STATES

routes = web.RouteTableDef()


@routes.get("/v1/messages/{id}")
@documented("A message (its webhook-id) and its state for each partner", answer=MessageView)
async def show_message(request: web.Request) -> web.Response:
    return json(await request.app[MESSAGES].get(request.match_info["id"]))


@routes.get("/v1/partners/{id}/messages")
@documented(
    "A partner's messages, newest first",
    answer=Page[PartnerMessage],
    query=(
        Query("status", {"enum": list(COPY_STATES)}, "only those in this state"),
        LIMIT,
        AFTER,
        SINCE,
        UNTIL,
    ),
)
async def partner_messages(request: web.Request) -> web.Response:
    page = await request.app[MESSAGES].of_partner(
        request.match_info["id"], status=request.query.get("status"), **window(request)
    )
    return json(page)


@routes.post("/v1/partners/{id}/messages/{msg}/resend")
@documented("Send a message again: same webhook-id, fresh schedule", answer=ResendOut, status=202)
async def resend(request: web.Request) -> web.Response:
    resent = await request.app[MESSAGES].resend(request.match_info["id"], request.match_info["msg"])
    return json(resent, 202)


@routes.post("/v1/partners/{id}/recover")
@documented(
    "Resend what failed or was dead-lettered in a time range",
    body=RecoverIn,
    answer=RecoverOut,
    status=202,
)
async def recover(request: web.Request) -> web.Response:
    body = await decode(request, RecoverIn)
    since = parse_moment(str(body.since), "since")
    until = None if body.until is None else parse_moment(str(body.until), "until")
    return json(await request.app[MESSAGES].recover(request.match_info["id"], since, until), 202)
