"""Signing in with the admin token, and out.

The token travels once, in the body of the sign-in form's POST; it is compared in constant
time and never stored, logged, echoed into the form or put in a URL. A wrong one sets no
session and shows the form again; after MOST_WRONG of them in a minute from one address, that
address waits (429) before it may try again.
"""

from __future__ import annotations

import math
import time
from collections import deque

from aiohttp import web

from notifier import logs
from notifier.admin.wire import SETTINGS
from notifier.console.pages import form_of, page, see_other
from notifier.console.sessions import (
    COOKIE,
    SESSIONS,
    clear_cookie,
    needs_secure_cookie,
    session_of,
    set_cookie,
    token_matches,
)

log = logs.get("console")
routes = web.RouteTableDef()

#: Wrong tokens an address may try per WINDOW_S, in each api process, before it must wait.
MOST_WRONG = 10
WINDOW_S = 60.0
#: Addresses remembered at most: a flood of addresses forgets the oldest, never grows memory.
ADDRESSES_KEPT = 10_000


class Guesses:
    """Wrong tokens by client address over the last WINDOW_S, in this process: guessing the
    token is slowed to MOST_WRONG a minute per address (per api process; behind a proxy, the
    proxy's address is everyone's, which delays operators there for a minute at most)."""

    def __init__(self) -> None:
        self.wrong: dict[str, deque[float]] = {}

    def wait_s(self, address: str, now: float) -> float:
        """How long `address` must wait before it may try again; 0 when it may now."""
        tries = self.wrong.get(address)
        while tries and tries[0] <= now - WINDOW_S:
            tries.popleft()
        if not tries or len(tries) < MOST_WRONG:
            return 0.0
        return tries[0] + WINDOW_S - now

    def missed(self, address: str, now: float) -> None:
        if address not in self.wrong and len(self.wrong) >= ADDRESSES_KEPT:
            del self.wrong[next(iter(self.wrong))]
        self.wrong.setdefault(address, deque(maxlen=MOST_WRONG)).append(now)


GUESSES: web.AppKey[Guesses] = web.AppKey("guesses", Guesses)

NO_TOKEN = (
    "This notifier has no NOTIFIER_ADMIN_TOKEN, and the console signs in with it: set one and "
    "restart the api."
)


def _cookie_warning(request: web.Request) -> str | None:
    """Plain http on an address other than loopback: the session cookie is Secure there, so
    the browser will not send it back over http. Say so rather than loop on the form."""
    if request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https":
        return None
    if not needs_secure_cookie(request):
        return None
    return (
        "This console is served over plain http on an address other than loopback: the "
        "browser keeps its session cookie for https only. Serve it through TLS (a proxy that "
        "sets X-Forwarded-Proto: https), or open it on a loopback address."
    )


def _form(request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
    if error is None and not request.config_dict[SETTINGS].admin_token:
        error = NO_TOKEN
    return page("login.html", status, error=error, warning=_cookie_warning(request))


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    if await request.app[SESSIONS].find(request.cookies.get(COOKIE)) is not None:
        return see_other("/console")
    return _form(request)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    expected = request.config_dict[SETTINGS].admin_token
    form = await form_of(request)
    given = form.get("token")
    if not expected:
        return _form(request, 403, NO_TOKEN)
    guesses, address, now = request.app[GUESSES], request.remote or "", time.monotonic()
    wait = guesses.wait_s(address, now)
    if wait > 0:  # even the right token: else guessing would go on, only unanswered
        answer = _form(request, 429, f"Too many wrong tokens: try again in {wait:.0f} s.")
        answer.headers["Retry-After"] = str(math.ceil(wait))
        return answer
    if not isinstance(given, str) or not token_matches(given, expected):
        guesses.missed(address, now)
        log.warning("console sign-in refused", remote=request.remote)
        return _form(request, 401, "That is not the admin token.")
    sessions = request.app[SESSIONS]
    earlier = await sessions.find(request.cookies.get(COOKIE))
    if earlier is not None:
        await sessions.end(earlier)
    session = await sessions.start()
    log.info("console sign-in", remote=request.remote)
    response = see_other("/console")
    set_cookie(response, request, session)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    await request.app[SESSIONS].end(session_of(request))
    response = see_other("/console/login")
    clear_cookie(response, request)
    return response
