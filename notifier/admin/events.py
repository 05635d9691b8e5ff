"""/v1/events: publish over HTTP, for a service that cannot reach Redis.

The body is an ingress entry's fields (`type`, `data`, `id`, `owner`, `traceparent`) and is
checked by the router's own
function: what it refuses here with a 400 is exactly what the router would dead-letter.
"""

from __future__ import annotations

from aiohttp import web

from notifier import rules
from notifier.admin.wire import STORE, decode, documented, json
from notifier.models import EventIn, EventOut

routes = web.RouteTableDef()


@routes.post("/v1/events")
@documented(
    "Publish an event (owner: only for that owner's partners), checked as the router checks it",
    body=EventIn,
    answer=EventOut,
    status=202,
)
async def publish(request: web.Request) -> web.Response:
    body = await decode(request, EventIn)
    entry_id = await request.app[STORE].publish(
        body.type, bytes(body.data), body.id, traceparent=body.traceparent, owner=body.owner
    )
    return json(EventOut(entry_id=entry_id, id=body.id or rules.message_id_of(entry_id)), 202)
