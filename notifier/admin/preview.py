"""/v1/partners/{id}/preview and /v1/preview: what a partner (saved, or not yet) would receive
for an event or a routed message, and why not; nothing is sent (README: the admin API)."""

from __future__ import annotations

from aiohttp import web

from notifier import preview
from notifier.admin.wire import STORE, decode, documented, json
from notifier.preview import PreviewIn, PreviewOut, UnsavedPreviewIn

routes = web.RouteTableDef()


@routes.post("/v1/partners/{id}/preview")
@documented(
    "Whether this partner would receive an event or a routed message, why not, the exact "
    "body and the signed headers; sends nothing",
    body=PreviewIn,
    answer=PreviewOut,
)
async def preview_partner(request: web.Request) -> web.Response:
    body = await decode(request, PreviewIn)
    store = request.app[STORE]
    partner = await store.get(request.match_info["id"])
    return json(await preview.answer(store, partner, body))


@routes.post("/v1/preview")
@documented(
    "The same for a partner not saved yet (signed with a key made for the preview, or its "
    "own secret when the body brings one)",
    body=UnsavedPreviewIn,
    answer=PreviewOut,
)
async def preview_unsaved(request: web.Request) -> web.Response:
    body = await decode(request, UnsavedPreviewIn)
    store = request.app[STORE]
    return json(await preview.of_event(store, preview.unsaved(store, body.partner), body.event))
