"""The admin API against hostile and mistaken clients, over real HTTP against a real Redis.

Every route needs the bearer token (but /healthz, /metrics and /openapi.json), and a client's
mistake is a 4xx with a JSON `{"error": ...}` body, never a 5xx. Requests are written byte by
byte on a raw socket because aiohttp's client refuses to send much of what a hostile client
would (bytes that are not UTF-8 in a header, malformed percent escapes, a body on GET...).
Explicit cases come first, then a fuzzer over every route.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import string
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.config import Settings
from notifier.models import Attempt
from notifier.redis import keys
from tests.helpers import BASE_ENV, KS, TOKEN, dead_letter, register

#: Dead letters are seeded under fixed ids so that requests can name them.
DEAD_IDS = ("1-1", "1-2", "2-1")
GOOD_AUTH = (b"Authorization", b"Bearer " + TOKEN.encode())


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def error(self) -> str:
        """The message of an `{"error": ...}` body; fails the test on any other shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        shown = msgspec.json.decode(self.body)
        assert isinstance(shown, dict) and list(shown) == ["error"], self
        assert isinstance(shown["error"], str) and shown["error"], self
        return shown["error"]


async def send(
    server: TestServer,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (GOOD_AUTH,),
    body: bytes | None = None,
) -> Answer:
    """One request, written as raw HTTP/1.1 bytes on a new connection, read until it closes."""
    head = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: notifier.test",
        *(name + b": " + value for name, value in headers),
    ]
    if body is not None:
        head.append(b"Content-Length: %d" % len(body))
    head.append(b"Connection: close")
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    while raw.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect: 100-continue
        raw = raw.partition(b"\r\n\r\n")[2]
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split(" ")[1]), found, payload)


def routes(app: web.Application, console: bool = False) -> Iterator[tuple[str, str]]:
    """(method, canonical path) of every route the app serves, HEAD included; a route for
    any method (the API's catch-all) is listed under a few concrete ones. The console's pages
    (HTML, with a session of their own) only with `console`, and then only them:
    tests/integration/test_console_hostile.py fuzzes them."""
    for route in app.router.routes():
        assert route.resource is not None
        if route.resource.canonical.startswith("/console") != console:
            continue
        methods = ["GET", "POST", "PUT", "DELETE"] if route.method == "*" else [route.method]
        for method in methods:
            yield method, route.resource.canonical


def _route_app() -> web.Application:
    """An app to list routes from at collection time; it never talks to its Redis."""
    return api.create_app(Redis(), config.load(BASE_ENV))


ROUTES = sorted(routes(_route_app()))
RESOURCES = sorted({path for _, path in ROUTES})


def fill(path: str, value: str) -> str:
    """A canonical path with every `{variable}` replaced by `value`."""
    return re.sub(r"\{\w+\}", value, path)


@dataclass
class Seeded:
    server: TestServer
    redis: Redis
    settings: Settings
    partner_id: str
    partner_secret: str


@pytest.fixture
async def seeded(redis: Redis, settings: Settings) -> AsyncIterator[Seeded]:
    """The API on the real Redis, holding a partner, attempts and dead letters to act on."""
    partner_id, secret = await register(
        redis, settings, "seeded", "https://seeded.example.com", ["order.created"]
    )
    attempt = Attempt(
        message_id="msg_1",
        event_type="order.created",
        attempt=1,
        at="2026-01-01T00:00:00Z",
        status=500,
        latency_ms=1.0,
        ok=False,
    )
    await redis.xadd(KS.partner(partner_id).attempts, {"b": msgspec.json.encode([attempt])})
    for entry_id in DEAD_IDS[:2]:
        await dead_letter(
            redis,
            partner_id,
            "msg_1",
            entry_id,
            reason="retries exhausted",
            attempts=msgspec.json.encode([attempt]).decode(),
            at="2026-01-01T00:00:00Z",
        )
    await redis.xadd(
        keys.DEAD,
        {"reason": "missing field: type", "entry": '{"data": "{}"}', "at": "2026-01-01T00:00:00Z"},
        id=DEAD_IDS[2],
    )
    server = TestServer(api.create_app(redis, settings))
    async with server:  # its __aenter__ is typed as returning a BaseTestServer
        yield Seeded(server, redis, settings, partner_id, secret)


# Explicit cases: most of these answered 500 once; the rest pin what already held.


@pytest.mark.parametrize("path", ["/v1/partners/@/attempts", "/v1/dead-letters"])
@pytest.mark.parametrize(
    "limit",
    [
        "%C2%B2",  # "²" passes str.isdigit() but int() refuses it
        "%D9%A1%D9%A2",  # Arabic-Indic "١٢": int() takes it, the documented limit is ASCII
        "",
        "0",
        "1001",
        "-1",
        "+5",
        "%205",
        "5%20",
        "1e3",
        "0x10",
        "5.0",
        "9" * 40,
        "00001",
    ],
)
async def test_a_bad_limit_is_400_naming_it(seeded: Seeded, path: str, limit: str) -> None:
    target = path.replace("@", seeded.partner_id) + "?limit=" + limit
    answer = await send(seeded.server, b"GET", target.encode())
    assert answer.status == 400, answer
    assert "limit" in answer.error()


@pytest.mark.parametrize("path", ["/v1/partners/@/attempts", "/v1/dead-letters"])
async def test_a_good_limit_is_taken(seeded: Seeded, path: str) -> None:
    base = path.replace("@", seeded.partner_id)
    for limit, expected in (("1", 1), ("1000", None), ("0007", None), (None, None)):
        target = base if limit is None else f"{base}?limit={limit}"
        answer = await send(seeded.server, b"GET", target.encode())
        assert answer.status == 200, answer
        shown = msgspec.json.decode(answer.body)["data"]  # a page: {"data": [...], "next"}
        assert shown and (expected is None or len(shown) == expected)


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe",
        b"Bearer " + TOKEN.encode() + b"\xff",
        b"Bearer \xc3" + TOKEN.encode(),
        b"\xff",
        b"\xffBearer " + TOKEN.encode(),
        b"Bearer " + "t\u00e9st".encode("latin-1"),
        b"Bearer " + TOKEN.encode().upper(),
    ],
)
async def test_a_credential_that_is_not_utf8_is_401(seeded: Seeded, value: bytes) -> None:
    answer = await send(seeded.server, b"GET", b"/v1/partners", [(b"Authorization", value)])
    assert answer.status == 401, answer
    assert answer.error() == "missing or wrong bearer token"


async def test_the_token_is_taken_in_every_accepted_spelling(seeded: Seeded) -> None:
    for value in (
        b"Bearer " + TOKEN.encode(),
        b"bearer " + TOKEN.encode(),
        b"BEARER   " + TOKEN.encode() + b"  ",
    ):
        answer = await send(seeded.server, b"GET", b"/v1/partners", [(b"Authorization", value)])
        assert answer.status == 200, (value, answer)


async def test_two_authorization_headers_are_401(seeded: Seeded) -> None:
    """Which of two credentials a proxy and notifier each read is not defined: refuse both."""
    for pair in (
        [GOOD_AUTH, (b"Authorization", b"Bearer wrong")],
        [(b"Authorization", b"Bearer wrong"), GOOD_AUTH],
        [GOOD_AUTH, GOOD_AUTH],
    ):
        answer = await send(seeded.server, b"GET", b"/v1/partners", pair)
        assert answer.status == 401, (pair, answer)


def _deep_map(depth: int) -> bytes:
    return b'{"map": ' + b'{"a": ' * depth + b'"$.type"' + b"}" * depth + b"}"


async def test_a_transform_nested_3000_deep_is_400(seeded: Seeded) -> None:
    """msgspec raises RecursionError on such a body; it must be the client's 400."""
    server, deep = seeded.server, _deep_map(3000)
    body = (
        b'{"name": "deep", "url": "https://deep.example.com", "events": ["*"], '
        b'"transform": ' + deep + b"}"
    )
    answer = await send(server, b"POST", b"/v1/partners", [GOOD_AUTH], body)
    assert answer.status == 400, answer
    assert "nests too deeply" in answer.error()
    target = f"/v1/partners/{seeded.partner_id}".encode()
    answer = await send(server, b"PATCH", target, [GOOD_AUTH], b'{"transform": ' + deep + b"}")
    assert answer.status == 400, answer
    assert "nests too deeply" in answer.error()
    # deep, though not deep enough for msgspec: the transform's own bound refuses it
    answer = await send(
        server, b"PATCH", target, [GOOD_AUTH], b'{"transform": ' + _deep_map(100) + b"}"
    )
    assert answer.status == 400, answer
    assert "nests deeper than" in answer.error()
    for deep_elsewhere in (b"[" * 100_000 + b"]" * 100_000, b'{"ids": ' + b"[" * 50_000):
        answer = await send(
            server, b"POST", b"/v1/dead-letters/replay", [GOOD_AUTH], deep_elsewhere
        )
        assert answer.status == 400, answer
        answer.error()


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate", b"GZIP"])
async def test_a_body_that_does_not_decompress_is_400(seeded: Seeded, encoding: bytes) -> None:
    """aiohttp inflates a request body itself; a body that fails to inflate is the client's."""
    answer = await send(
        seeded.server,
        b"POST",
        b"/v1/partners",
        [GOOD_AUTH, (b"Content-Encoding", encoding)],
        b"this is not gzip",
    )
    assert answer.status == 400, answer
    assert "content-encoding" in answer.error().lower()


async def test_a_compressed_body_is_still_read(seeded: Seeded) -> None:
    body = gzip.compress(
        json.dumps({"name": "zipped", "url": "https://z.example.com", "events": ["*"]}).encode()
    )
    answer = await send(
        seeded.server, b"POST", b"/v1/partners", [GOOD_AUTH, (b"Content-Encoding", b"gzip")], body
    )
    assert answer.status == 201, answer


async def test_a_gzip_bomb_is_413(seeded: Seeded) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), 9)  # ~64 KiB that inflate to 64 MiB
    answer = await send(
        seeded.server, b"POST", b"/v1/partners", [GOOD_AUTH, (b"Content-Encoding", b"gzip")], bomb
    )
    assert answer.status == 413, answer
    answer.error()


#: Encodings aiohttp's parser refuses itself when their package is missing.
UNDECODABLE = (b"br", b"zstd")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"FOO /v1/partners HTTP/1.1\r\n\r\n",
        b"GET /v1/partners/\xff HTTP/1.1\r\n\r\n",
        b"GET /v1/partners HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET /v1/partners/" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /v1/partners HTTP/1.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        b"POST /v1/partners HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
        b"POST /v1/partners HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /v1/partners HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # inflating starts in the parser, and some bytes already fail there
        b"GET /v1/partners HTTP/1.1\r\nContent-Encoding: deflate\r\nContent-Length: 2\r\n\r\n{}",
        *(
            b"POST /v1/partners HTTP/1.1\r\nContent-Encoding: "
            + encoding
            + b"\r\nContent-Length: 3\r\n\r\nabc"
            for encoding in UNDECODABLE
        ),
    ],
)
async def test_the_parser_refuses_in_4xx(seeded: Seeded, request_bytes: bytes) -> None:
    """What aiohttp's HTTP parser refuses before notifier sees the request. Its answer is a
    plain-text 400, not the API's JSON (no hook of aiohttp's reaches it), but a 4xx."""
    reader, writer = await asyncio.open_connection(seeded.server.host, seeded.server.port)
    writer.write(request_bytes)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    status = int(raw.split(b" ", 2)[1])
    assert 400 <= status < 500, raw


# Secrets are never repeated back, not even in a 400 about them.

SECRET_TEXT = "s3cr3t-V4LUE-do-not-echo"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": "https://x.example.com", "events": ["*"], "secret": SECRET_TEXT},
        ),
        (
            "POST",
            "/v1/partners",
            {
                "name": "x",
                "url": "https://x.example.com",
                "events": ["*"],
                "secret": "whsec_" + SECRET_TEXT,
            },
        ),
        (
            "POST",
            "/v1/partners",
            {
                "name": "x",
                "url": "https://x.example.com",
                "events": ["*"],
                "secret": SECRET_TEXT * 20,
            },
        ),
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": "https://x.example.com", "events": ["*"], "secret": [SECRET_TEXT]},
        ),
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": f"https://user:{SECRET_TEXT}@x.example.com", "events": ["*"]},
        ),
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": f"user:{SECRET_TEXT}@x.example.com", "events": ["*"]},
        ),
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": f"ftp://user:{SECRET_TEXT}@x.example.com", "events": ["*"]},
        ),
        (
            "POST",
            "/v1/partners",
            {"name": "x", "url": f"https://u:{SECRET_TEXT}@x.example.com:99999", "events": ["*"]},
        ),
        (
            "POST",
            "/v1/partners",
            {
                "name": "x",
                "url": "https://x.example.com",
                "events": ["*"],
                "headers": {"x-api-key": SECRET_TEXT + "\n"},
            },
        ),
        (
            "POST",
            "/v1/partners",
            {
                "name": "x",
                "url": "https://x.example.com",
                "events": ["*"],
                "headers": {"x-api-key": SECRET_TEXT * 300},
            },
        ),
        ("PATCH", "/v1/partners/@", {"url": f"user:{SECRET_TEXT}@x.example.com"}),
        ("PATCH", "/v1/partners/@", {"headers": {"authorization": SECRET_TEXT + "\x00"}}),
        ("PATCH", "/v1/partners/@", {"secret": SECRET_TEXT}),
        ("POST", "/v1/partners/@/secret/rotate", {"secret": SECRET_TEXT}),
        ("POST", "/v1/partners/@/secret/rotate", {"secret": "whsec_" + SECRET_TEXT}),
        ("POST", "/v1/partners/@/secret/rotate", {"secret": SECRET_TEXT, "other": 1}),
    ],
)
async def test_a_refused_secret_is_not_repeated(
    seeded: Seeded, method: str, path: str, body: dict[str, Any]
) -> None:
    target = path.replace("@", seeded.partner_id).encode()
    answer = await send(
        seeded.server, method.encode(), target, [GOOD_AUTH], json.dumps(body).encode()
    )
    assert answer.status == 400, answer
    message = answer.error()
    assert "s3cr3t" not in message.lower(), message
    assert seeded.partner_secret not in answer.body.decode()


# Expect, unknown paths and methods: answered by the API, not by aiohttp around it.


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [(b"POST", b"/v1/partners", 201), (b"PUT", b"/healthz", 405), (b"GET", b"/nope", 404)],
)
@pytest.mark.parametrize("expect", [b"100-continue", b"200-ok", b"\x80"])
async def test_expect_is_answered_in_json_and_after_the_token(
    seeded: Seeded, method: bytes, path: bytes, status: int, expect: bytes
) -> None:
    """aiohttp answers an Expect header before any middleware runs: in plain text, before the
    token is checked, and with a 500 for a value that is not UTF-8. notifier's routes, the
    catch-all for unknown paths and methods included, answer it themselves."""
    body = b'{"name": "x", "url": "https://x.example.com", "events": ["*"]}'
    answer = await send(seeded.server, method, path, [(b"Expect", expect)], body)
    assert answer.status == 401, answer
    assert answer.error() == "missing or wrong bearer token"
    answer = await send(seeded.server, method, path, [GOOD_AUTH, (b"Expect", expect)], body)
    assert answer.status == (status if expect == b"100-continue" else 417), answer
    if answer.status >= 400:
        answer.error()


async def test_unknown_paths_and_methods_are_json(seeded: Seeded) -> None:
    answer = await send(seeded.server, b"PUT", b"/v1/partners")
    assert answer.status == 405, answer
    assert set(answer.headers["allow"].split(",")) == {"GET", "HEAD", "POST"}
    answer.error()
    for target in (b"/v1/nope", b"/", b"/v1/partners/x/y", b"/%ff", b"/v1/partners/"):
        answer = await send(seeded.server, b"GET", target)
        assert answer.status == 404, (target, answer)
        answer.error()


# Every route, listed from the router so that a new one is covered without editing this file.


def test_the_router_is_what_this_file_expects() -> None:
    """Guards the listing itself: if it came back empty, the tests below would prove nothing."""
    listed = set(ROUTES)
    assert ("POST", "/v1/partners") in listed and ("GET", "/healthz") in listed
    assert len(RESOURCES) >= 8
    assert sorted(api.PUBLIC_PATHS) == ["/healthz", "/metrics", "/openapi.json"]


def test_the_catch_all_route_comes_last() -> None:
    """aiohttp tries resources in the order they were added, and the catch-all takes every
    path: a route added after it would answer 404."""
    *others, last = _route_app().router.resources()
    assert last.canonical == "/{tail}"
    assert all(resource.canonical != "/{tail}" for resource in others)


async def test_every_route_answers_expect_itself(seeded: Seeded) -> None:
    """A route added without the API's Expect handler gets aiohttp's, which answers in plain
    text before the token is checked, and 500 for a value that is not UTF-8."""
    for method, path in sorted(routes(seeded.server.app)):
        target = fill(path, seeded.partner_id).encode()
        answer = await send(
            seeded.server, method.encode(), target, [GOOD_AUTH, (b"Expect", b"\x80")], b"{}"
        )
        assert answer.status == 417, (method, path, answer)
        if method != "HEAD":
            answer.error()


async def test_every_route_but_health_and_metrics_needs_the_token(seeded: Seeded) -> None:
    wrong: list[list[tuple[bytes, bytes]]] = [
        [],
        [(b"Authorization", b"Bearer wrong")],
        [(b"Authorization", TOKEN.encode())],
        [(b"Authorization", b"Basic " + TOKEN.encode())],
        [(b"Authorization", b"Bearer")],
        [(b"Authorization", b"Bearer " + TOKEN.encode() + b"x")],
        [(b"Authorization", b"Bearer " + TOKEN.encode()[:-1])],
        [(b"Authorization", b"Bearer \xff")],
        [(b"X-Authorization", b"Bearer " + TOKEN.encode())],
    ]
    checked = 0
    for method, path in sorted(routes(seeded.server.app)):
        if path in api.PUBLIC_PATHS:
            continue
        target = fill(path, seeded.partner_id).encode()
        for headers in wrong:
            answer = await send(seeded.server, method.encode(), target, headers, b"{}")
            assert answer.status == 401, (method, path, headers, answer)
            if method != "HEAD":
                assert answer.error() == "missing or wrong bearer token"
            checked += 1
    assert checked >= 9 * len(wrong)
    # nor may an unknown path or method tell a client without the token what exists
    for method, target in (("GET", b"/v1/nope"), ("PUT", b"/v1/partners"), ("GET", b"/nope")):
        answer = await send(seeded.server, method.encode(), target, [])
        assert answer.status == 401, (method, target, answer)


async def test_health_and_metrics_need_no_token(seeded: Seeded) -> None:
    for method, path in routes(seeded.server.app):
        if path not in api.PUBLIC_PATHS:
            continue
        for headers in ([], [(b"Authorization", b"Bearer wrong\xff")], [GOOD_AUTH]):
            answer = await send(seeded.server, method.encode(), path.encode(), headers)
            assert answer.status == 200, (method, path, headers, answer)


# The fuzzer: every route, drawn requests, and what must hold whatever the request is.


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from each strategy in proportion to its weight, so that most drawn requests are
    near enough to good ones to reach the handlers' deeper paths."""
    return st.sampled_from([s for weight, s in options for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


#: Stands for the seeded partner's id (known only once it is registered) in drawn requests;
#: letters only, so that quoting and JSON leave it as it is.
PARTNER = "SEEDEDPARTNER"
VALID_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # 24 bytes
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.just(PARTNER),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
SECRETS = st.one_of(
    st.just(VALID_SECRET),
    st.text(max_size=40).map(lambda s: "fuzz-secret-" + s),
    st.integers(),
    st.none(),
    JSON,
)
URLS = st.sampled_from(
    [
        "https://x.example.com/h",
        "http://10.0.0.1/",
        "https://",
        "javascript:x",
        "",
        "https://u:fuzz-secret-pw@x.example.com/",
        "u:fuzz-secret-pw@x.example.com",
        "https://[::1",
        "https://x.example.com:99999/",
        "https://ex ample.com",
        "h" * 3000,
    ]
)
TRANSFORMS = st.fixed_dictionaries(
    {},
    optional={
        "pick": st.lists(st.sampled_from(["type", "data.a", "data.items[0]", "x", ""]), max_size=3),
        "omit": st.lists(st.text(max_size=10), max_size=3),
        "rename": st.dictionaries(
            st.sampled_from(["data.a", "type", "nope"]), st.text(max_size=8), max_size=3
        ),
        "map": st.dictionaries(
            st.text(max_size=8),
            JSON | st.sampled_from(["$.type", "$", "$$x", "$nope", "$.data.a[0]", "$.x"]),
            max_size=3,
        ),
        "other": JSON,
    },
)
PARTNER_FIELDS = {
    "name": st.text(max_size=30),
    "url": URLS,
    "events": st.lists(
        st.sampled_from(["*", "order.created", "Bad Type", "", "a" * 300]), max_size=3
    ),
    "rate_limit": st.sampled_from(["5/second", "0/hour", "x", "9/fortnight", "1/0 second"])
    | st.text(max_size=12)
    | st.integers(),
    "max_in_flight": st.integers(),
    "headers": st.dictionaries(
        st.text(max_size=10), st.text(max_size=10) | st.integers(), max_size=3
    ),
    "transform": TRANSFORMS | JSON,
    "enabled": st.booleans() | JSON,
    "ordered": st.booleans() | JSON,
    "secret": SECRETS,
    "surprise": JSON,
}
#: Partner fields as a careful client writes them: a body of them is taken (201, or 200 for
#: a PATCH), which takes the fuzz past validation into the store.
GOOD_FIELDS = {
    "rate_limit": st.sampled_from(["5/second", "100/minute", "1000/hour"]),
    "max_in_flight": st.integers(1, 1000),
    "headers": st.dictionaries(
        st.sampled_from(["x-api-key", "X-Tenant"]),
        st.text(string.printable.strip(), max_size=10),
        max_size=2,
    ),
    "transform": st.sampled_from(
        [
            {},
            {"omit": ["data.a"]},
            {"pick": ["type", "data"]},
            {"map": {"t": "$.type", "n": [1, "$.data.a"]}},
        ]
    ),
    "enabled": st.booleans(),
    "ordered": st.booleans(),
}
GOOD_PARTNER = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=30),
        "url": st.just("https://x.example.com/h"),
        "events": st.sampled_from([["*"], ["order.created", "order.paid"]]),
    },
    optional={**GOOD_FIELDS, "secret": st.just(VALID_SECRET)},
)
HOSTILE_DOCUMENTS = st.one_of(
    JSON,
    st.fixed_dictionaries({}, optional=PARTNER_FIELDS),
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=30), "url": URLS, "events": st.just(["*"])},
        optional={k: v for k, v in PARTNER_FIELDS.items() if k not in ("name", "url", "events")},
    ),
    st.fixed_dictionaries(
        {},
        optional={  # replay
            "partner": st.just(PARTNER) | st.text(max_size=10) | st.integers(),
            "ids": st.lists(
                st.sampled_from(
                    [*DEAD_IDS, "1", "-", "+", "0-0", "x", "", "18446744073709551616-0", PARTNER]
                )
                | st.text(max_size=10),
                max_size=5,
            )
            | JSON,
            "all": st.booleans(),
        },
    ),
    st.fixed_dictionaries({"secret": SECRETS}),
)  # rotate
DOCUMENTS = weighted(
    (6, GOOD_PARTNER),
    (4, st.fixed_dictionaries({}, optional=GOOD_FIELDS)),
    (1, st.just({"secret": VALID_SECRET})),
    (6, HOSTILE_DOCUMENTS),
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, list[str]]:
    """A body, and the secret texts it carries that no answer may repeat."""
    kind = draw(st.sampled_from(["none", "empty", "bytes", "deep", *["json"] * 5]))
    if kind == "none":
        return None, []
    if kind == "empty":
        return b"", []
    if kind == "bytes":
        return draw(st.binary(max_size=300)), []
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        return draw(st.sampled_from([b"[", b'{"a":', b'{"transform": {"map": {"a":'])) * depth, []
    document = draw(DOCUMENTS)
    secrets = []
    if isinstance(document, dict):
        secret = document.get("secret")
        if isinstance(secret, str) and secret.startswith("fuzz-secret-") and len(secret) > 14:
            secrets.append(secret)
        if isinstance(document.get("url"), str) and "fuzz-secret-pw" in document["url"]:
            secrets.append("fuzz-secret-pw")
    return json.dumps(document).encode(), secrets


#: Characters a request line may carry; `%` is there to make escapes, good and broken.
URL_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
ODD_PATH_IDS = st.one_of(
    st.just("ptn_0000000000000000"),
    st.just("%00"),
    st.just("%ff%fe"),
    st.just("%"),
    st.just("%zz"),
    st.just(".."),
    st.just("."),
    st.just("..%2F..%2Fhealthz"),
    st.sampled_from(["v1/nope", "x/y", "V1/partners", "healthz/", "%2E%2E/healthz"]),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30).map(
        lambda s: quote(s, safe="")
    ),
    st.text(URL_CHARS, min_size=1, max_size=30),
    st.integers(1, 3000).map(lambda n: "a" * n),
)
PATH_IDS = weighted((1, st.just(PARTNER)), (1, ODD_PATH_IDS))
LIMITS = weighted(
    (2, st.integers(-5, 2000).map(str)),
    (2, st.sampled_from(["²", "١٢", "1e3", " 5", "+5", "", "9" * 30, "0x10", "00001"])),
    (2, st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=4)),
    (1, st.text(max_size=8)),
)
QUERY_VALUES = LIMITS | st.just(PARTNER) | st.just(DEAD_IDS[0]) | st.text(max_size=8)
QUERIES = weighted(
    (
        3,
        st.fixed_dictionaries(
            {"limit": LIMITS},
            optional={"partner": QUERY_VALUES, "after": QUERY_VALUES, "status": QUERY_VALUES},
        ).map(lambda q: "?" + urlencode(q, quote_via=quote)),
    ),
    (1, st.just("")),
    (
        1,
        st.dictionaries(
            st.sampled_from(["limit", "partner", "after", "x"]), QUERY_VALUES, max_size=4
        ).map(lambda q: "?" + urlencode(q, quote_via=quote)),
    ),
    (1, st.text(URL_CHARS + "=&?/", max_size=40).map(lambda q: "?" + q)),
)
#: Header values a conforming parser takes: tab, visible ASCII and any byte from 0x80 up.
HEADER_VALUE = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip(b" \t")
)
#: Headers that frame the request or that `send` writes itself: drawn, they would make it
#: one the parser refuses, or a different request from the one the test believes it sent.
FRAMING = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"upgrade",
    b"keep-alive",
    b"te",
    b"trailer",
    b"authorization",
}
HEADER_NAMES = st.sampled_from(
    [
        b"Content-Type",
        b"Content-Encoding",
        b"Accept",
        b"Accept-Encoding",
        b"Cookie",
        b"Expect",
        b"X-Forwarded-For",
        b"Origin",
        b"Range",
        b"If-None-Match",
        b"Forwarded",
        b"X-Request-Id",
        b"Authorization-Extra",
    ]
) | st.text(string.ascii_letters + "-!#$&'*+.^_`|~", min_size=1, max_size=12).map(
    str.encode
).filter(lambda name: name.lower() not in FRAMING)
EXTRA_HEADERS = st.lists(
    st.tuples(
        HEADER_NAMES,
        HEADER_VALUE
        | st.sampled_from(
            [
                b"gzip",
                b"deflate",
                b"identity",
                b"100-continue",
                b"application/json",
                b"multipart/form-data; boundary=x",
                b"text/plain; charset=\xff",
            ]
        ),
    ),
    max_size=4,
    unique_by=lambda header: header[0].lower(),
)  # the parser refuses some twice
#: (header values, whether they carry the token); random values never do. Most requests carry
#: it, so that most reach the handlers.
GOOD_AUTHS = st.sampled_from(
    [([b"Bearer " + TOKEN.encode()], True), ([b"bearer " + TOKEN.encode()], True)]
)
BAD_AUTHS: st.SearchStrategy[tuple[list[bytes], bool]] = st.one_of(
    st.just(([], False)),
    st.just(([b"Bearer " + TOKEN.encode(), b"Bearer " + TOKEN.encode()], False)),
    st.just(([b"Bearer " + TOKEN.encode() + b"\xff"], False)),
    HEADER_VALUE.map(lambda v: ([v], False)),
    HEADER_VALUE.map(lambda v: ([b"Bearer " + v], False)),
)
AUTHS = st.integers(0, 9).flatmap(lambda n: GOOD_AUTHS if n < 7 else BAD_AUTHS)
#: Methods the parser knows (test_the_parser_refuses_in_4xx has the others), and not
#: CONNECT: its request target is host:port, and the parser then hands the connection over.
ODD_METHODS = st.sampled_from(["PUT", "OPTIONS", "TRACE", "PROPFIND", "PURGE"])


@dataclass
class Drawn:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    authorized: bool
    secrets: list[str] = field(default_factory=list)
    compress: bytes | None = None  # the Content-Encoding to apply once PARTNER is replaced

    def sent(self, partner_id: str) -> tuple[bytes, bytes | None]:
        """The request target and body, with the seeded partner's real id."""
        target = self.target.replace(PARTNER, partner_id).encode()
        if self.body is None:
            return target, None
        body = self.body.replace(PARTNER.encode(), partner_id.encode())
        if self.compress == b"gzip":
            body = gzip.compress(body)
        elif self.compress == b"deflate":
            body = zlib.compress(body)
        return target, body

    @property
    def parser_may_refuse(self) -> bool:
        """A compressed body the parser may fail to inflate while it reads the request."""
        return self.body is not None and any(
            name.lower() == b"content-encoding" for name, _ in self.headers
        )


@st.composite
def requests(draw: st.DrawFn, path: str) -> Drawn:
    methods = [m for m, p in ROUTES if p == path]
    method = draw(weighted((6, st.sampled_from(methods)), (1, ODD_METHODS)))
    target = fill(path, draw(PATH_IDS)) + draw(QUERIES)
    auth_values, authorized = draw(AUTHS)
    # without encodings the parser refuses itself (test_the_parser_refuses_in_4xx)
    extra = [
        (name, value)
        for name, value in draw(EXTRA_HEADERS)
        if not (name.lower() == b"content-encoding" and value.lower() in UNDECODABLE)
    ]
    body, secrets = draw(bodies())
    encoding = draw(weighted((6, st.none()), (1, st.sampled_from([b"gzip", b"deflate"]))))
    compress = None
    if encoding is not None and not any(n.lower() == b"content-encoding" for n, _ in extra):
        extra.append((b"Content-Encoding", encoding))
        if body is not None and draw(st.booleans()):  # else the body does not inflate
            compress = encoding
    headers = [(b"Authorization", v) for v in auth_values] + extra
    headers = draw(st.permutations(headers))
    return Drawn(method, target, headers, body, authorized, secrets, compress)


FUZZ = hsettings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("path", RESOURCES)
@FUZZ
@given(data=st.data())
async def test_no_request_gets_a_5xx(seeded: Seeded, path: str, data: st.DataObject) -> None:
    """Whatever is sent to a route: never a 5xx, a 401 without the token (but on /healthz and
    /metrics), errors in the API's JSON, and neither token nor secret in any answer."""
    drawn = data.draw(requests(path))
    if not await seeded.redis.hexists(KS.shards[0].partners, seeded.partner_id):
        # an earlier example deleted it: without one, every example would stop at a 404
        seeded.partner_id, _ = await register(
            seeded.redis, seeded.settings, "again", "https://again.example.com", ["*"]
        )
    target, body = drawn.sent(seeded.partner_id)
    answer = await send(seeded.server, drawn.method.encode(), target, drawn.headers, body)
    event(f"status {answer.status}")  # --hypothesis-show-statistics: what the fuzz reached
    assert answer.status < 500, answer
    shown = answer.body.decode("utf-8", "replace")
    assert TOKEN not in shown and seeded.partner_secret not in shown
    if (
        drawn.parser_may_refuse
        and answer.status == 400
        and answer.headers.get("content-type", "").startswith("text/plain")
    ):
        return  # refused by aiohttp's parser, token or not (test_the_parser_refuses_in_4xx)
    if path not in api.PUBLIC_PATHS and not drawn.authorized:
        assert answer.status == 401, answer
    if answer.status >= 400 and drawn.method != "HEAD":
        message = answer.error()
        for secret in drawn.secrets:
            assert secret not in message, message
    elif drawn.method != "HEAD" and answer.status != 204 and path != "/metrics":
        msgspec.json.decode(answer.body)  # a success is JSON too
