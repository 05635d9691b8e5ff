"""JSON in and out of the admin API: bodies decoded into Structs, answers, errors, and the
application's shared state, for every resource module.

A client's mistake is always a 4xx with `{"error": "..."}` naming what is wrong: a body that is
not JSON, nests too deeply or breaks a rule; a query parameter out of range. Never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from redis.asyncio import Redis

from notifier import rules
from notifier.config import Settings
from notifier.dead_letters import DeadLetters
from notifier.engine.sender import Sender
from notifier.messages import Messages
from notifier.models import ErrorOut
from notifier.store import Store

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
#: ASCII digits only: str.isdigit() also takes superscripts, which int() refuses, and other
#: scripts' digits, which int() reads; neither is a limit the API documents.
_DIGITS = re.compile(r"[0-9]{1,4}")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
MESSAGES: web.AppKey[Messages] = web.AppKey("messages", Messages)
DEAD_LETTERS: web.AppKey[DeadLetters] = web.AppKey("dead_letters", DeadLetters)
#: The HTTP client of test pings; made when the app starts (it needs the running loop).
SENDER: web.AppKey[Sender] = web.AppKey("sender", Sender)
REDIS: web.AppKey[Redis] = web.AppKey("redis", Redis)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Query:
    """A query parameter of a route, for the OpenAPI document."""

    name: str
    schema: dict[str, Any]
    description: str


LIMIT = Query(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "items per page"
)
AFTER = Query("after", {"type": "string"}, "the `next` cursor of the previous page")
OWNER = Query("owner", {"type": "string", "maxLength": 128}, "only the partners of this owner")
SINCE = Query("since", {"type": "string"}, "ISO-8601 time (or epoch ms): not before")
UNTIL = Query("until", {"type": "string"}, "ISO-8601 time (or epoch ms): not after")


@dataclass(frozen=True)
class Doc:
    """What a route takes and answers, from the same Structs the handler decodes and answers
    with: the OpenAPI document (`openapi.py`) is built from these."""

    summary: str
    body: Any = None
    answer: Any = None
    status: int = 200
    query: tuple[Query, ...] = ()
    public: bool = False


def documented(
    summary: str,
    *,
    body: Any = None,
    answer: Any = None,
    status: int = 200,
    query: tuple[Query, ...] = (),
    public: bool = False,
) -> Callable[[Handler], Handler]:
    def mark(handler: Handler) -> Handler:
        handler.__dict__["doc"] = Doc(summary, body, answer, status, query, public)
        return handler

    return mark


def json(answer: msgspec.Struct, status: int = 200) -> web.Response:
    """An answer: always one of the Structs the OpenAPI document describes it with."""
    return web.Response(body=_encode(answer), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    # A message may quote what the client sent, and aiohttp keeps bytes that are not UTF-8 as
    # lone surrogates, which no JSON encoder takes: escape them rather than fail with a 500.
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return json(ErrorOut(text), status)


async def decode(request: web.Request, kind: type[T]) -> T:
    try:
        body = await request.read()
    except web.RequestPayloadError as exc:
        # aiohttp inflates a Content-Encoding itself: a body that does not inflate, or a
        # chunked body cut short, is the client's mistake, which it wraps in this error
        cause = exc.__cause__
        detail = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        raise web.HTTPBadRequest(text=f"body could not be read: {detail}") from None
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


async def decode_optional(request: web.Request, kind: type[T], empty: T) -> T:
    """A body that may be left out, as `empty`."""
    return await decode(request, kind) if request.can_read_body else empty


def moment(request: web.Request, name: str) -> int | None:
    """A query parameter holding an ISO-8601 time (or epoch ms), as epoch ms."""
    raw = request.query.get(name)
    return None if raw is None else parse_moment(raw, name)


def parse_moment(raw: str, name: str) -> int:
    try:
        return rules.moment(raw, name)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


class Window(TypedDict):
    """A page of a list in a time range, as the query gives it (`after`, `limit`, `since`,
    `until`), for the list functions' keywords."""

    after: str | None
    limit: int
    since_ms: int | None
    until_ms: int | None


def window(request: web.Request) -> Window:
    return Window(
        after=request.query.get("after"),
        limit=limit(request),
        since_ms=moment(request, "since"),
        until_ms=moment(request, "until"),
    )


def limit(request: web.Request, default: int = 100, most: int = 1000) -> int:
    """The `limit` query parameter: ASCII digits only ("²" is a digit to str.isdigit)."""
    raw = request.query.get("limit", str(default))
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= most:
        raise web.HTTPBadRequest(text=f"limit: must be a whole number from 1 to {most}")
    return int(raw)
