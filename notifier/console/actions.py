"""The console's actions: HTML forms POSTed with the session's CSRF token (checked before any
of these runs), each calling the operation its admin API route calls.

An action answers with a redirect (303) to the page it came from, whose notice says how it
went, so a reload never sends it twice. Two answer with a page instead: a rotation shows the
new secret, this once, and never stores it for a later page; and an action that asks for
confirmation (Rotate secret, Replay all) shows what it will do, with a `Confirm` button that
posts it again, confirmed.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from notifier import rules
from notifier.admin.wire import DEAD_LETTERS, MESSAGES, SENDER, STORE
from notifier.console.pages import form_of, page, part, see_other, urlencode
from notifier.console.sessions import SESSIONS, Notice, session_of
from notifier.errors import Invalid, NotFound
from notifier.models import PartnerPatch

routes = web.RouteTableDef()

#: The most of a notice shown (an answer's excerpt is cut before that anyway).
MAX_NOTICE = 500
Form = MultiDictProxy[Any]


def field(form: Form, name: str) -> str:
    """A text field of the form, "" when left out; a file where text belongs is refused."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{name}: expected text")
    return value


async def _told(request: web.Request, location: str, kind: str, text: str) -> web.Response:
    notice = Notice(kind="ok" if kind == "ok" else "error", text=text[:MAX_NOTICE])
    await request.app[SESSIONS].tell(session_of(request), notice)
    return see_other(location)


def _partner_url(partner_id: str) -> str:
    return "/console/partners/" + part(partner_id)


def _confirm(request: web.Request, title: str, text: str, back: str, **fields: str) -> web.Response:
    """The page that asks before an action: `Confirm` posts it again with `confirm=yes`."""
    return page(
        "confirm.html",
        session=session_of(request),
        title=title,
        text=text,
        action=request.path,
        fields=fields,
        back=back,
    )


@routes.post("/partners/{id}/enable")
async def enable(request: web.Request) -> web.Response:
    return await _switch(request, True)


@routes.post("/partners/{id}/disable")
async def disable(request: web.Request) -> web.Response:
    return await _switch(request, False)


async def _switch(request: web.Request, on: bool) -> web.Response:
    partner_id = request.match_info["id"]
    partner = await request.config_dict[STORE].update(partner_id, PartnerPatch(enabled=on))
    done = "enabled" if on else "disabled"
    return await _told(request, _partner_url(partner_id), "ok", f"{partner.name}: {done}.")


@routes.post("/partners/{id}/test")
async def send_test(request: web.Request) -> web.Response:
    partner_id = request.match_info["id"]
    outcome = await request.config_dict[STORE].test(partner_id, request.config_dict[SENDER])
    answer = f"HTTP {outcome.status}" if outcome.status is not None else "no answer"
    text = f"Test sent: {answer} in {outcome.latency_ms:.0f} ms"
    if outcome.ok:
        text += f": {outcome.excerpt}" if outcome.excerpt else "."
    else:
        text += f": {outcome.error}" if outcome.error else "."
    return await _told(request, _partner_url(partner_id), "ok" if outcome.ok else "error", text)


@routes.post("/partners/{id}/rotate")
async def rotate(request: web.Request) -> web.Response:
    partner_id = request.match_info["id"]
    store = request.config_dict[STORE]
    partner = await store.get(partner_id)
    form = await form_of(request)
    if field(form, "confirm") != "yes":
        return _confirm(
            request,
            f"Rotate the secret of {partner.name}?",
            "A new signing key signs from now on; the current one keeps signing alongside it "
            "for NOTIFIER_SECRET_OVERLAP, while the partner moves to the new one. The new "
            "secret is shown once, on the next page.",
            _partner_url(partner_id),
        )
    made = await store.rotate_secret(partner_id)
    secret, public_key = (None, made) if made.startswith("whpk_") else (made, None)
    return page(
        "secret.html",
        session=session_of(request),
        partner=partner,
        secret=secret,
        public_key=public_key,
    )


@routes.post("/partners/{id}/messages/{msg}/resend")
async def resend(request: web.Request) -> web.Response:
    partner_id, message_id = request.match_info["id"], request.match_info["msg"]
    form = await form_of(request)
    back = (
        "/console/messages/" + part(message_id)
        if field(form, "back") == "message"
        else _partner_url(partner_id)
    )
    messages = request.config_dict[MESSAGES]
    await messages.partner(partner_id)  # no partner: a page of its own (404)
    try:
        await messages.resend(partner_id, message_id)
    except NotFound as exc:  # a message past its retention: said on the page it came from
        return await _told(request, back, "error", f"Resend: {exc}")
    return await _told(request, back, "ok", f"{message_id}: sent again (same webhook-id).")


@routes.post("/partners/{id}/recover")
async def recover(request: web.Request) -> web.Response:
    partner_id = request.match_info["id"]
    form = await form_of(request)
    back = _partner_url(partner_id)
    try:
        since = rules.moment(field(form, "since").strip(), "since")
        until_text = field(form, "until").strip()
        until = rules.moment(until_text, "until") if until_text else None
        done = await request.config_dict[MESSAGES].recover(partner_id, since, until)
    except (ValueError, Invalid) as exc:
        return await _told(request, back, "error", f"Recover: {exc}")
    more = "" if done.complete else " (it stopped at its cap: recover again for the rest)"
    return await _told(request, back, "ok", f"Recover: {done.resent} sent again{more}.")


@routes.post("/dead-letters/replay")
async def replay(request: web.Request) -> web.Response:
    form = await form_of(request)
    wanted = field(form, "id").strip()[:200]
    back = _dead_letters_url(field(form, "partner"))
    if not wanted:
        return await _told(request, back, "error", "Replay: which dead letter?")
    done = await request.config_dict[DEAD_LETTERS].replay(ids=[wanted])
    if done.not_found:
        return await _told(request, back, "error", f"Replay: no dead letter {wanted}.")
    return await _told(request, back, "ok", f"Replayed {done.replayed}: {wanted}.")


@routes.post("/dead-letters/replay-all")
async def replay_all(request: web.Request) -> web.Response:
    form = await form_of(request)
    partner = field(form, "partner").strip()[:200] or None
    dead_letters = request.config_dict[DEAD_LETTERS]
    if field(form, "confirm") != "yes":
        whose = f"of partner {partner}" if partner else "of every partner"
        return _confirm(
            request,
            f"Replay all dead letters {whose}?",
            "Each is sent again with its webhook-id and a fresh retry schedule, and leaves the "
            "dead letters. Malformed events, and those of partners since removed, stay.",
            _dead_letters_url(partner or ""),
            partner=partner or "",
        )
    done = await dead_letters.replay(everything=partner is None, partner=partner)
    text = f"Replayed {done.replayed} dead letter{'s' if done.replayed != 1 else ''}."
    return await _told(request, _dead_letters_url(partner or ""), "ok", text)


def _dead_letters_url(partner: str) -> str:
    partner = partner.strip()[:200]
    return "/console/dead-letters" + (f"?{urlencode({'partner': partner})}" if partner else "")
