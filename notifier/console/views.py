"""The console's pages: the overview, a partner, the dead letters, a message.

Each reads through the objects the admin API's routes use (`Store`, `Messages`,
`DeadLetters`) and `notifier top`'s table, never through the HTTP API. The overview and the
partner page have a live part: asked for with the `X-Console-Live` header (the console's
script does, every few seconds), a page answers that part alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from notifier.admin.wire import DEAD_LETTERS, MESSAGES, REDIS, STORE
from notifier.cli.top import by_owner
from notifier.console.chart import draw
from notifier.console.overview import BOARD, MAX_ROWS, matching
from notifier.console.pages import page, part, see_other
from notifier.console.sessions import SESSIONS, session_of
from notifier.errors import NotFound
from notifier.models import Partner
from notifier.telemetry import history
from notifier.types import COPY_STATES

routes = web.RouteTableDef()

LIVE_HEADER = "X-Console-Live"
#: Without script, a page with a live part reloads itself this often (seconds).
RELOAD_S = 10
ATTEMPTS_SHOWN = 20
MESSAGES_SHOWN = 25
DEAD_LETTERS_SHOWN = 50
MAX_QUERY = 200


def _live(request: web.Request) -> bool:
    return request.headers.get(LIVE_HEADER) == "1"


def _query(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return None if value is None else value[:MAX_QUERY]


async def _page(request: web.Request, template: str, **context: Any) -> web.Response:
    """A whole page: the session (its CSRF token for the forms) and its notice."""
    session = session_of(request)
    notice = await request.app[SESSIONS].notice(session)
    return page(template, session=session, notice=notice, **context)


@routes.get("")
async def overview(request: web.Request) -> web.Response:
    board = request.app[BOARD]
    query, owner = _query(request, "q") or "", _query(request, "owner")
    grouped = request.query.get("group") == "owner"
    totals, everyone, measured, partners = await board.rows()
    rows = matching(everyone, {p.id: p for p in partners}, query, owner)
    if grouped:
        rows = by_owner(rows)
    context: dict[str, Any] = {
        "rows": rows[:MAX_ROWS],
        "hidden": max(0, len(rows) - MAX_ROWS),
        "totals": totals,
        "measured": measured,
        "query": query,
        "owner": owner,
        "grouped": grouped,
    }
    if _live(request):
        return page("overview_live.html", **context)
    return await _page(request, "overview.html", refresh=RELOAD_S, **context)


@routes.get("/")
async def slash(request: web.Request) -> web.Response:
    return see_other("/console")


async def _partner_live(request: web.Request, partner: Partner) -> dict[str, Any]:
    row, measured = await request.app[BOARD].row(partner)
    minutes = await history.read(request.config_dict[REDIS], partner.id)
    attempts = await request.config_dict[STORE].attempt_page(partner.id, limit=ATTEMPTS_SHOWN)
    return {
        "partner": partner,
        "row": row,
        "measured": measured,
        "chart": draw(minutes),
        "attempts": attempts.data,
    }


@routes.get("/partners/{id}")
async def partner_page(request: web.Request) -> web.Response:
    partner = await request.config_dict[STORE].get(request.match_info["id"])
    live = await _partner_live(request, partner)
    if _live(request):
        return page("partner_live.html", **live)
    state = _query(request, "state")
    state = state if state in COPY_STATES else None
    listed = await request.config_dict[MESSAGES].of_partner(
        partner.id, status=state, after=_query(request, "after"), limit=MESSAGES_SHOWN
    )
    return await _page(
        request,
        "partner.html",
        refresh=RELOAD_S,
        states=COPY_STATES,
        state=state,
        messages=listed,
        **live,
    )


@routes.get("/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    partner = _query(request, "partner") or None
    letters = await request.config_dict[DEAD_LETTERS].page(
        partner, after=_query(request, "after"), limit=DEAD_LETTERS_SHOWN
    )
    redis: Any = request.config_dict[REDIS]
    store = request.config_dict[STORE]
    stored = sum([await redis.xlen(stream) for stream in store.keyspace.dead_streams])
    named = {letter.partner for letter in letters.data if letter.partner}
    return await _page(
        request,
        "dead_letters.html",
        letters=letters,
        partner=partner,
        stored=stored,
        names=await _names(request, named),
    )


async def _names(request: web.Request, partner_ids: Iterable[str]) -> dict[str, str | None]:
    """The names of these partners; None for one removed since."""
    store = request.config_dict[STORE]
    names: dict[str, str | None] = {}
    for partner_id in partner_ids:
        try:
            names[partner_id] = (await store.get(partner_id)).name
        except NotFound:
            names[partner_id] = None
    return names


@routes.get("/messages")
async def find_message(request: web.Request) -> web.Response:
    wanted = (_query(request, "id") or "").strip()
    if not wanted:
        return see_other("/console")
    return see_other("/console/messages/" + part(wanted))


@routes.get("/messages/{id}")
async def message(request: web.Request) -> web.Response:
    view = await request.config_dict[MESSAGES].get(request.match_info["id"])
    names = await _names(request, (delivery.partner for delivery in view.deliveries))
    return await _page(request, "message.html", message=view, names=names)
