"""/v1/partners: register, list, show, change, remove partners and rotate their secrets."""

from __future__ import annotations

from aiohttp import web

from notifier import pacing
from notifier.admin.wire import (
    AFTER,
    LIMIT,
    OWNER,
    SENDER,
    STORE,
    decode,
    decode_optional,
    documented,
    json,
    limit,
)
from notifier.models import (
    Page,
    PartnerCreated,
    PartnerIn,
    PartnerOut,
    PartnerPatch,
    PartnerShown,
    PartnerUpdated,
    RotateIn,
    SecretOut,
    TestOut,
    public_as,
)

routes = web.RouteTableDef()


@routes.post("/v1/partners")
@documented(
    "Register a partner; its secret is shown this once (v1a: its public key)",
    body=PartnerIn,
    answer=PartnerCreated,
    status=201,
)
async def create_partner(request: web.Request) -> web.Response:
    body = await decode(request, PartnerIn)
    partner, secret = await request.app[STORE].create(body)
    return json(public_as(partner, PartnerCreated, secret=secret), 201)


@routes.get("/v1/partners")
@documented(
    "List partners, oldest first; owner= only one owner's",
    answer=Page[PartnerOut],
    query=(LIMIT, AFTER, OWNER),
)
async def list_partners(request: web.Request) -> web.Response:
    page = await request.app[STORE].partner_page(
        after=request.query.get("after"), limit=limit(request), owner=request.query.get("owner")
    )
    return json(page)


@routes.get("/v1/partners/{id}")
@documented("Show a partner (never its secrets), and how it is paced", answer=PartnerShown)
async def show_partner(request: web.Request) -> web.Response:
    return json(await pacing.partner_shown(request.app[STORE], request.match_info["id"]))


@routes.patch("/v1/partners/{id}")
@documented(
    "Change a partner: only the fields given (a new signature scheme rotates its key)",
    body=PartnerPatch,
    answer=PartnerUpdated,
)
async def update_partner(request: web.Request) -> web.Response:
    patch = await decode(request, PartnerPatch)
    partner, secret = await request.app[STORE].change(request.match_info["id"], patch)
    if secret:
        return json(public_as(partner, PartnerUpdated, secret=secret))
    return json(public_as(partner, PartnerUpdated))


@routes.delete("/v1/partners/{id}")
@documented("Remove a partner and its messages", status=204)
async def delete_partner(request: web.Request) -> web.Response:
    await request.app[STORE].remove(request.match_info["id"])
    return web.Response(status=204)


@routes.post("/v1/partners/{id}/secret/rotate")
@documented(
    "A new signing secret (v1a: key pair); the old one signs for NOTIFIER_SECRET_OVERLAP",
    body=RotateIn,
    answer=SecretOut,
)
async def rotate_secret(request: web.Request) -> web.Response:
    body = await decode_optional(request, RotateIn, RotateIn())
    partner_id = request.match_info["id"]
    made = await request.app[STORE].rotate_secret(partner_id, body.secret)
    if made.startswith("whpk_"):
        return json(SecretOut(partner_id, public_key=made))
    return json(SecretOut(partner_id, secret=made))


@routes.post("/v1/partners/{id}/test")
@documented("Send a signed notifier.test event now; how it went", answer=TestOut)
async def test_partner(request: web.Request) -> web.Response:
    """Send a signed `notifier.test` event now, outside the partner's stream, through the same
    SSRF guard, signing and headers as every delivery, and answer how it went."""
    return json(await request.app[STORE].test(request.match_info["id"], request.app[SENDER]))
