"""/v1/event-types: the catalog of event types, their schemas and examples (README: Event
types). A type needs no entry to be published; an entry with a schema makes the router
check every event of that type against it."""

from __future__ import annotations

from aiohttp import web

from notifier.admin.wire import AFTER, LIMIT, REDIS, decode, documented, json, limit
from notifier.catalog import EventType, EventTypeIn, EventTypes
from notifier.models import Page

routes = web.RouteTableDef()


@routes.put("/v1/event-types/{type}")
@documented(
    "Create or replace an event type: a description, a JSON Schema (2020-12) of its data, "
    "an example checked against it, deprecated",
    body=EventTypeIn,
    answer=EventType,
)
async def put_event_type(request: web.Request) -> web.Response:
    body = await decode(request, EventTypeIn)
    entry = await EventTypes(request.app[REDIS]).put(request.match_info["type"], body)
    return json(entry)


@routes.get("/v1/event-types")
@documented("List event types by name", answer=Page[EventType], query=(LIMIT, AFTER))
async def list_event_types(request: web.Request) -> web.Response:
    page = await EventTypes(request.app[REDIS]).page(
        after=request.query.get("after"), limit=limit(request)
    )
    return json(page)


@routes.get("/v1/event-types/{type}")
@documented("Show an event type", answer=EventType)
async def show_event_type(request: web.Request) -> web.Response:
    return json(await EventTypes(request.app[REDIS]).get(request.match_info["type"]))


@routes.delete("/v1/event-types/{type}")
@documented("Remove an event type: its events are no longer checked", status=204)
async def delete_event_type(request: web.Request) -> web.Response:
    await EventTypes(request.app[REDIS]).remove(request.match_info["type"])
    return web.Response(status=204)
