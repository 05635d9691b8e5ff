"""The console's pages: Jinja2 templates rendered with autoescaping, the headers every answer
carries, and the two static files (one script, one stylesheet) served from the package.

Partner names, URLs, answers' excerpts and event data are third parties' text: autoescaping is
on for every template and nothing is marked safe, so they are always shown as text. The
Content-Security-Policy allows scripts, styles and fetches from this origin only, and no inline
script or style at all, so even markup that got through could not run.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2
import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from notifier import __version__
from notifier.partners import public_key

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: Pages show live data and carry a session's CSRF token: no cache keeps them.
NO_STORE = "no-store"
STATIC_TYPES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

_package = resources.files("notifier.console")
STATIC = {name: (_package / "static" / name).read_bytes() for name in STATIC_TYPES}
#: A static file's URL changes with its content, so a browser may keep it for long.
_VERSIONS = {name: hashlib.sha256(body).hexdigest()[:12] for name, body in STATIC.items()}


def static_url(name: str) -> str:
    return f"/console/static/{name}?v={_VERSIONS[name]}"


def ago(seconds: float | None) -> str:
    """A duration as an operator reads it: 45s, 12m 5s, 3h 20m, 2d 4h."""
    if seconds is None or seconds <= 0:
        return "-"
    whole = int(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // small_size}{smaller}"
    return f"{whole // 60}m {whole % 60}s" if whole >= 60 else f"{whole}s"


def pretty(value: Any) -> str:
    """JSON indented for reading: the escaping is the template's."""
    if isinstance(value, msgspec.Raw):
        value = bytes(value)
    if isinstance(value, bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return bytes(value).decode(errors="replace")
    return json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False, sort_keys=True)


def part(value: object) -> str:
    """A value as one segment of a URL's path: every character that means something in a URL
    (`/`, `?`, `#`, `%`) escaped."""
    quoted: str = quote(str(value), safe="", errors="surrogateescape")
    return quoted


def state_class(state: str) -> str:
    """A state as a CSS class name: `breaker open` -> `state-breaker-open`."""
    return "state-" + "-".join(state.split())


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("notifier.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals.update(static=static_url, version=__version__)


def urlencode(value: str | dict[str, str]) -> str:
    """A query string (from a dict) or a value in one, every special character escaped, and
    bytes that were not UTF-8 given back as they came (Jinja's own filter fails on them)."""
    if isinstance(value, dict):
        return "&".join(f"{part(name)}={part(item)}" for name, item in value.items())
    return part(value)


ENV.filters.update(
    ago=ago,
    pretty=pretty,
    state_class=state_class,
    part=part,
    public_key=public_key,
    urlencode=urlencode,
)


def page(template: str, status: int = 200, **context: Any) -> web.Response:
    context.setdefault("session", None)
    context.setdefault("notice", None)
    context.setdefault("refresh", None)
    text = ENV.get_template(template).render(**context)
    # aiohttp keeps bytes of a request that are not UTF-8 as lone surrogates, and a page may
    # quote the request: shown escaped rather than failing to encode
    body = text.encode("utf-8", "backslashreplace")
    response = web.Response(body=body, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = NO_STORE
    return response


def see_other(location: str) -> web.Response:
    """A 303 to a page of the console (never to elsewhere: `location` is ours)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": NO_STORE})


async def form_of(request: web.Request) -> MultiDictProxy[Any]:
    """The POSTed form; one that cannot be read (a broken multipart body, bytes that are not
    the charset it names, a body cut short) is the client's mistake: a 400."""
    try:
        return await request.post()
    except (ValueError, LookupError, web.RequestPayloadError) as exc:
        raise web.HTTPBadRequest(text=f"the form could not be read: {exc}") from None


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of the console, whoever made it (a page, a redirect, an error), carries
    the security headers."""
    for name, value in HEADERS.items():
        response.headers[name] = value


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(
        body=STATIC[name],
        content_type=STATIC_TYPES[name],
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )
