"""The admin API (README: "The admin API"): the application, its token and its error handling.

Every route but /healthz, /metrics and /openapi.json needs the bearer token, compared as bytes
in constant time. Bodies are capped and decoded with msgspec into Structs that forbid unknown
fields, so a bad body is a 400 naming the field. Whatever a client sends, its mistake is a 4xx
with a JSON `{"error": ...}` body: a 5xx means notifier or its Redis failed, and
tests/integration/test_api_hostile.py fuzzes every route against a real Redis to keep it so.
Each resource is a module of its own with its routes (`partners`, `attempts`, `dead_letters`,
`health`); this module puts them together, and counts every request (`metered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import _default_expect_handler
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import logs
from notifier.admin import (
    attempts,
    dead_letters,
    event_types,
    events,
    health,
    messages,
    openapi,
    partners,
    preview,
)
from notifier.admin.wire import (
    DEAD_LETTERS,
    MESSAGES,
    REDIS,
    SENDER,
    SETTINGS,
    STORE,
    Doc,
    error,
)
from notifier.config import Settings
from notifier.console import app as console
from notifier.dead_letters import DeadLetters
from notifier.engine.sender import Sender
from notifier.errors import ConfigError, Conflict, Invalid, ListenError, NotFound
from notifier.messages import Messages
from notifier.store import Store
from notifier.telemetry import Telemetry
from notifier.telemetry.metrics import Metrics

log = logs.get("api")

#: The resources, one module each; their routes are added in this order.
RESOURCES = (
    partners,
    preview,
    attempts,
    messages,
    dead_letters,
    events,
    event_types,
    health,
    openapi,
)

MAX_BODY = 256 * 1024
#: How long the api waits for NOTIFIER_API_ADDR's name to resolve and bind before it gives up.
RESOLVE_SECONDS = 15.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: The routes anyone may call: those documented `public` (which the OpenAPI document shows
#: without security); every other path, known or not, needs the token.
PUBLIC_PATHS = frozenset(
    route.path
    for resource in RESOURCES
    for route in resource.routes
    if isinstance(route, web.RouteDef)
    and isinstance(doc := getattr(route.handler, "doc", None), Doc)
    and doc.public
)
UNAUTHORIZED = "missing or wrong bearer token"
#: The route of every path no other route takes (see `unmatched`).
CATCH_ALL = "/{tail:.*}"
Authorizer = Callable[[web.Request], bool]


def _is_public(request: web.Request) -> bool:
    """Decided on the route the router matched, not on the path's text, so no spelling of a
    path (escapes, dot segments, a missing route) can reach a handler without the token. The
    console's routes need no bearer token: they have a session of their own."""
    resource = request.match_info.route.resource
    if resource is None:
        return False
    canonical = resource.canonical
    return canonical in PUBLIC_PATHS or (canonical + "/").startswith(console.PREFIX + "/")


def _credential(request: web.Request) -> bytes | None:
    """The bearer credential as the client sent it, in bytes, or None.

    Read from the raw header bytes: a header may carry any byte, and one that is not UTF-8
    must be a wrong token, not an encoding error. Two Authorization headers are refused,
    since a proxy in front may have checked the other one.
    """
    values = [value for name, value in request.raw_headers if name.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, credential = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return credential.strip(b" \t")


def authorizer(token: str | None) -> Authorizer:
    """Whether a request may go on: it goes to a public route, or carries the token."""
    expected = token.encode() if token else None

    def authorized(request: web.Request) -> bool:
        if expected is None or _is_public(request):
            return True
        # compare_digest takes as long whatever the bytes; b"" never equals a set token
        return hmac.compare_digest(_credential(request) or b"", expected)

    return authorized


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        answer = error(exc.status, exc.text or exc.reason)
        if hdrs.ALLOW in exc.headers:  # a 405 says what the path does take
            answer.headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
        return answer
    except NotFound as exc:
        return error(404, str(exc))
    except Invalid as exc:
        return error(400, str(exc))
    except Conflict as exc:
        return error(409, str(exc))
    except (rx.ConnectionError, rx.TimeoutError):
        return error(503, "redis is unreachable")
    except Exception:
        log.exception("api handler failed", path=request.path)
        return error(500, "internal error")


def metered(metrics: Metrics) -> Any:
    """Count every answer by its route's template, method and status, with its latency, once
    the other middlewares made it (a refused token is a 401 of its route)."""

    @web.middleware
    async def meter(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # the few `errors` lets through (below 400)
            status = exc.status
            raise
        finally:
            matched = request.match_info.route
            resource = matched.resource
            known = resource is not None and matched.handler is not unmatched
            route = resource.canonical if known and resource is not None else "unmatched"
            metrics.api_request(route, request.method, status, time.perf_counter() - started)

    return meter


def auth_middleware(authorized: Authorizer) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not authorized(request):
            return error(401, UNAUTHORIZED)
        return await handler(request)

    return auth


def expect_handler(
    authorized: Authorizer,
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """aiohttp answers an Expect header before any middleware runs, in plain text. Check the
    token first, so a client without it never sends its body, and refuse an expectation other
    than 100-continue in the JSON every other error is in."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if not authorized(request):
            return error(401, UNAUTHORIZED)
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            # not quoted: aiohttp's own refusal does, and a byte that is not UTF-8 then
            # cannot be encoded into its answer
            return error(417, "Expect: only 100-continue is supported")
        await _default_expect_handler(request)  # writes the 100 Continue
        return None

    return expect


async def unmatched(request: web.Request) -> web.Response:
    """What no other route takes: the 404 or 405 aiohttp would answer itself.

    Without this route aiohttp answers those, and an Expect header on them, outside the app:
    in plain text, before the token is checked, and with a 500 for an Expect value that is
    not UTF-8. Routed here, they get the same Expect handling and errors as every route.
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def create_app(redis: Redis, settings: Settings, metrics: Metrics | None = None) -> web.Application:
    """The API; its requests are counted in `metrics` (the process's, served on /metrics)."""
    authorized = authorizer(settings.admin_token)
    meter = metered(metrics or Telemetry.disabled().metrics)
    app = web.Application(
        middlewares=[meter, errors, auth_middleware(authorized)], client_max_size=MAX_BODY
    )
    app[REDIS] = redis
    app[STORE] = Store(redis, settings)
    app[MESSAGES] = Messages(redis, settings)
    app[DEAD_LETTERS] = DeadLetters(redis, settings)
    app[SETTINGS] = settings

    async def sender(app: web.Application) -> AsyncIterator[None]:
        async with Sender(settings) as client:
            app[SENDER] = client
            yield

    app.cleanup_ctx.append(sender)
    expect = expect_handler(authorized)
    for resource in RESOURCES:
        for route in resource.routes:
            assert isinstance(route, web.RouteDef)
            # every route with `expect`: aiohttp's own answers Expect before the token check
            if route.method == "GET":  # and HEAD, as add_get does
                app.router.add_get(route.path, route.handler, expect_handler=expect)
            else:
                app.router.add_route(route.method, route.path, route.handler, expect_handler=expect)
    console.mount(app)
    # Last, always: it takes every path, so a route added after it would never be reached.
    app.router.add_route("*", CATCH_ALL, unmatched, expect_handler=expect)
    return app


def check_token(settings: Settings) -> None:
    """Refuse to expose partner secrets and data with no token, unless told it is local-only."""
    if settings.admin_token:
        return
    host, _ = settings.api_host_port
    if not settings.api_local_only:
        raise ConfigError(
            "NOTIFIER_ADMIN_TOKEN is not set: the admin API will not start without "
            "a token (set NOTIFIER_API_LOCAL_ONLY=1 to run it tokenless on loopback)"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"NOTIFIER_API_LOCAL_ONLY=1 needs a loopback NOTIFIER_API_ADDR, not {host}"
        )


async def _resolve(host: str, port: int) -> None:
    """Resolve NOTIFIER_API_ADDR's name within RESOLVE_SECONDS, in a thread the process does not
    wait for when it exits: asyncio's own resolver thread is joined as its loop closes, so a
    name whose DNS does not answer held a refused start for as long as the resolver retried (a
    minute or more) after the error was said."""
    loop = asyncio.get_running_loop()
    found: asyncio.Future[None] = loop.create_future()

    def done(error: OSError | None) -> None:
        if found.done():
            return
        if error is None:
            found.set_result(None)
        else:
            found.set_exception(error)

    def work() -> None:
        error = None
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(done, error)

    threading.Thread(target=work, name="resolve NOTIFIER_API_ADDR", daemon=True).start()
    await asyncio.wait_for(found, RESOLVE_SECONDS)


async def serve(app: web.Application, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = settings.api_host_port
    try:
        # a name whose DNS does not answer would hold the start-up for as long as the
        # resolver retries (a minute or more): say so after a bounded wait instead
        await _resolve(host, port)
        await asyncio.wait_for(web.TCPSite(runner, host, port).start(), RESOLVE_SECONDS)
    except (OSError, TimeoutError) as exc:
        await runner.cleanup()
        why = "its name did not resolve in time" if isinstance(exc, TimeoutError) else None
        raise ListenError(
            f"cannot listen on NOTIFIER_API_ADDR={settings.api_addr}: "
            f"{why or exc.strerror or exc}; choose a free port or an address of this "
            "host"
        ) from None
    log.info("admin api listening", addr=settings.api_addr)
    return runner
