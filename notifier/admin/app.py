"""The admin API (contract section 3): the application, its token and its error handling.

Every /v1 route needs the bearer token, compared in constant time. Bodies are capped and decoded
with msgspec into Structs that forbid unknown fields, so a bad body is a 400 naming the field.
Each resource is a module of its own with its routes (`partners`, `attempts`, `dead_letters`,
`health`); this module puts them together.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import logs
from notifier.admin import attempts, dead_letters, health, partners
from notifier.admin.wire import REDIS, SETTINGS, STORE, error
from notifier.config import Settings
from notifier.errors import ConfigError, Invalid, ListenError, NotFound
from notifier.store import Store

log = logs.get("api")

MAX_BODY = 256 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_middlewares(token: str | None) -> list[Any]:
    expected = token.encode() if token else None

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(exc.status, exc.text or exc.reason)
        except NotFound as exc:
            return error(404, str(exc))
        except Invalid as exc:
            return error(400, str(exc))
        except (rx.ConnectionError, rx.TimeoutError):
            return error(503, "redis is unreachable")
        except Exception:
            log.exception("api handler failed", path=request.path)
            return error(500, "internal error")

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith("/v1"):
            given = request.headers.get("Authorization", "")
            scheme, _, credential = given.partition(" ")
            # A header may carry any byte: compared as bytes, so none can raise here.
            raw = credential.strip().encode("utf-8", errors="surrogateescape")
            if not (scheme.lower() == "bearer" and hmac.compare_digest(raw, expected)):
                return error(401, "missing or wrong bearer token")
        return await handler(request)

    return [errors, auth]


def create_app(redis: Redis, settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=make_middlewares(settings.admin_token), client_max_size=MAX_BODY
    )
    app[REDIS] = redis
    app[STORE] = Store(redis, settings)
    app[SETTINGS] = settings
    for resource in (partners, attempts, dead_letters, health):
        app.add_routes(resource.routes)
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


async def serve(app: web.Application, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = settings.api_host_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(
            f"cannot listen on NOTIFIER_API_ADDR={settings.api_addr}: "
            f"{exc.strerror or exc}; choose a free port or an address of this "
            "host"
        ) from None
    log.info("admin api listening", addr=settings.api_addr)
    return runner
