"""The console as an application of its own, mounted by the api process at /console.

It uses the admin API's objects (store, messages, dead letters, the HTTP client of test
pings) through the parent application, so every action runs the very operation its API route
runs, and it keeps its own: the sessions and the overview's readings. Two middlewares stand
in front of every page: `shown` turns whatever went wrong into an HTML page with a 4xx (a 5xx
only when notifier or Redis failed), and `guard` lets through only a signed-in session, and
on a POST only with that session's CSRF token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import _default_expect_handler
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import logs
from notifier.admin.wire import REDIS, SETTINGS
from notifier.config import Settings
from notifier.console import actions, signin, views
from notifier.console.overview import BOARD, Board
from notifier.console.pages import form_of, page, secure_headers, see_other, static
from notifier.console.sessions import COOKIE, SESSION, SESSIONS, Sessions, token_matches
from notifier.errors import Conflict, Invalid, NotFound

log = logs.get("console")

PREFIX = "/console"
#: The routes a browser without a session reaches: the sign-in page and the static files.
OPEN = frozenset({"/console/login", "/console/static/{name}"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(status: int, title: str, detail: str) -> web.Response:
    return page("problem.html", status, title=title, detail=detail)


@web.middleware
async def shown(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _problem(exc.status, exc.reason, exc.text or exc.reason)
    except NotFound as exc:
        return _problem(404, "Not found", str(exc))
    except Invalid as exc:
        return _problem(400, "Not accepted", str(exc))
    except Conflict as exc:
        return _problem(409, "Changed meanwhile", str(exc))
    except (rx.ConnectionError, rx.TimeoutError):
        return _problem(503, "Redis is unreachable", "notifier cannot reach Redis; try again.")
    except Exception:
        log.exception("console page failed", path=request.path)
        return _problem(500, "Internal error", "The console failed; the logs say why.")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical in OPEN:
        return await handler(request)
    session = await request.app[SESSIONS].find(request.cookies.get(COOKIE))
    if session is None:
        return see_other("/console/login")
    if request.method not in ("GET", "HEAD"):
        form = await form_of(request)
        given = form.get("csrf")
        if not isinstance(given, str) or not token_matches(given, session.csrf):
            return _problem(
                403,
                "Refused",
                "This form is not from this session's console (its CSRF token is missing or "
                "wrong): nothing was changed. Reload the page and try again.",
            )
    request[SESSION] = session
    return await handler(request)


async def unknown(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="No console page at this address.")


async def expect(request: web.Request) -> web.StreamResponse | None:
    """aiohttp answers an Expect header before any middleware, in plain text, and fails on a
    value that is not UTF-8: refuse any expectation but 100-continue with a page of ours."""
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        response = _problem(417, "Expectation failed", "Only Expect: 100-continue is taken.")
        await secure_headers(request, response)
        return response
    await _default_expect_handler(request)  # writes the 100 Continue
    return None


async def _watching(console: web.Application) -> AsyncIterator[None]:
    """The overview's rates are read from the processes' reports for as long as the api runs
    (`Board.watch`), not only when somebody looks."""
    stop = asyncio.Event()
    task = asyncio.create_task(console[BOARD].watch(stop))
    yield
    stop.set()
    await task


def create(redis: Redis, settings: Settings) -> web.Application:
    """The console application; `mount` adds it to the api's."""
    console = web.Application(middlewares=[shown, guard])
    console[SESSIONS] = Sessions(redis)
    console[BOARD] = Board(redis, settings)
    console.cleanup_ctx.append(_watching)
    console[signin.GUESSES] = signin.Guesses()
    console.on_response_prepare.append(secure_headers)
    console.router.add_get("/static/{name}", static, expect_handler=expect)
    for module in (signin, views, actions):
        for route in module.routes:
            assert isinstance(route, web.RouteDef)
            console.router.add_route(route.method, route.path, route.handler, expect_handler=expect)
            if route.method == "GET":  # and HEAD, as add_get does
                console.router.add_route("HEAD", route.path, route.handler, expect_handler=expect)
    # every other method on /console itself, and every other path: the console's own answer
    # (a sign-in redirect without a session), never the API's
    console.router.add_route("*", "", unknown, expect_handler=expect)
    console.router.add_route("*", "/{tail:.*}", unknown, expect_handler=expect)
    return console


def mount(api: web.Application) -> None:
    """Serve the console at /console on the api's address, with the api's Redis and objects."""
    console = create(api[REDIS], api[SETTINGS])
    # the last guard: a library that repeats a form field must not show the token either
    logs.hide(api[SETTINGS].admin_token)
    api.add_subapp(PREFIX, console)
