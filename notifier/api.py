"""The admin API (contract section 3): partners, attempts, dead letters, health, metrics.

Every /v1 route needs the bearer token, compared in constant time. Bodies are capped and decoded
with msgspec into Structs that forbid unknown fields, so a bad body is a 400 naming the field.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from redis import exceptions as rx
from redis.asyncio import Redis

from notifier import logs, rules, telemetry
from notifier.config import Settings
from notifier.errors import ConfigError, Invalid, ListenError, NotFound
from notifier.models import PartnerIn, PartnerPatch, ReplayIn, RotateIn, public
from notifier.store import Store

log = logs.get("api")

MAX_BODY = 256 * 1024
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encode = msgspec.json.Encoder().encode
STORE: web.AppKey[Store] = web.AppKey("store", Store)
REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json({"error": message}, status)


async def decode(request: web.Request, kind: type[T]) -> T:
    body = await request.read()
    if not body:
        raise web.HTTPBadRequest(text="request body is empty")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise web.HTTPBadRequest(text=rules.validation_message(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="body nests too deeply") from None


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
        if request.path.startswith("/v1"):
            given = request.headers.get("Authorization", "")
            scheme, _, credential = given.partition(" ")
            if expected is not None and not (
                    scheme.lower() == "bearer"
                    and hmac.compare_digest(credential.strip().encode(), expected)):
                return error(401, "missing or wrong bearer token")
        return await handler(request)

    return [errors, auth]


async def create_partner(request: web.Request) -> web.Response:
    body = await decode(request, PartnerIn)
    partner, secret = await request.app[STORE].create(body)
    return json({**public(partner), "secret": secret}, 201)


async def list_partners(request: web.Request) -> web.Response:
    return json([public(p) for p in await request.app[STORE].partners()])


async def show_partner(request: web.Request) -> web.Response:
    return json(public(await request.app[STORE].get(request.match_info["id"])))


async def update_partner(request: web.Request) -> web.Response:
    patch = await decode(request, PartnerPatch)
    return json(public(await request.app[STORE].update(request.match_info["id"], patch)))


async def delete_partner(request: web.Request) -> web.Response:
    await request.app[STORE].remove(request.match_info["id"])
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    body = await decode(request, RotateIn) if request.can_read_body else RotateIn()
    partner_id = request.match_info["id"]
    secret = await request.app[STORE].rotate_secret(partner_id, body.secret)
    return json({"id": partner_id, "secret": secret})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise web.HTTPBadRequest(text="limit: must be a whole number from 1 to 1000")
    return int(raw)


async def partner_attempts(request: web.Request) -> web.Response:
    return json(await request.app[STORE].attempts(request.match_info["id"], _limit(request)))


async def dead_letters(request: web.Request) -> web.Response:
    letters = await request.app[STORE].dead_letters(request.query.get("partner"),
                                                    _limit(request))
    return json(letters)


async def replay(request: web.Request) -> web.Response:
    body = await decode(request, ReplayIn) if request.can_read_body else ReplayIn()
    count = await request.app[STORE].replay(body.partner, body.ids)
    return json({"replayed": count})


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        return json({"status": "unavailable", "redis": f"unreachable: {exc}"}, 503)
    return json({"status": "ok", "redis": "ok"})


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=telemetry.prometheus_text(),
                        content_type="text/plain", charset="utf-8")


def create_app(redis: Redis, settings: Settings) -> web.Application:
    app = web.Application(middlewares=make_middlewares(settings.admin_token),
                          client_max_size=MAX_BODY)
    app[REDIS] = redis
    app[STORE] = Store(redis, settings)
    app.router.add_post("/v1/partners", create_partner)
    app.router.add_get("/v1/partners", list_partners)
    app.router.add_get("/v1/partners/{id}", show_partner)
    app.router.add_patch("/v1/partners/{id}", update_partner)
    app.router.add_delete("/v1/partners/{id}", delete_partner)
    app.router.add_post("/v1/partners/{id}/secret/rotate", rotate_secret)
    app.router.add_get("/v1/partners/{id}/attempts", partner_attempts)
    app.router.add_get("/v1/dead-letters", dead_letters)
    app.router.add_post("/v1/dead-letters/replay", replay)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


def check_token(settings: Settings) -> None:
    """Refuse to expose partner secrets and data with no token, unless told it is local-only."""
    if settings.admin_token:
        return
    host, _ = settings.api_host_port
    if not settings.api_local_only:
        raise ConfigError("NOTIFIER_ADMIN_TOKEN is not set: the admin API will not start without "
                         "a token (set NOTIFIER_API_LOCAL_ONLY=1 to run it tokenless on loopback)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"NOTIFIER_API_LOCAL_ONLY=1 needs a loopback NOTIFIER_API_ADDR, not {host}")


async def serve(app: web.Application, settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = settings.api_host_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen on NOTIFIER_API_ADDR={settings.api_addr}: "
                          f"{exc.strerror or exc}; choose a free port or an address of this "
                          "host") from None
    log.info("admin api listening", addr=settings.api_addr)
    return runner
