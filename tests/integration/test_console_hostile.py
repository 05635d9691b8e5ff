"""The console's routes against hostile and mistaken requests, written byte by byte on a raw
socket as tests/integration/test_api_hostile.py writes the API's: whatever is sent, never a
5xx, always the security headers, and never the admin token or a partner's secret in an answer.
Most requests carry a signed-in session and its CSRF token, so that they reach the handlers."""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.config import Settings
from tests.console import client, sign_in
from tests.helpers import BASE_ENV, KS, TOKEN, register
from tests.integration.test_api_hostile import (
    EXTRA_HEADERS,
    ODD_PATH_IDS,
    PARTNER,
    QUERIES,
    fill,
    routes,
    send,
    weighted,
)

CONSOLE_ROUTES = sorted(routes(api.create_app(Redis(), config.load(BASE_ENV)), console=True))
CONSOLE_PATHS = sorted({path for _, path in CONSOLE_ROUTES})
FIELD_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["yes", "message", "partner", "1-1", "msg_1", PARTNER, "2000-01-01", ""]),
    st.sampled_from(["9" * 40, "-1", "2026-13-45T99:99", "\x00", "%ff", "../../", "a" * 3000]),
)
FIELDS = st.dictionaries(
    st.sampled_from(["confirm", "since", "until", "id", "partner", "back", "token", "x"]),
    FIELD_VALUES,
    max_size=5,
)
ODD_METHODS = st.sampled_from(["PUT", "DELETE", "OPTIONS", "PATCH"])


@dataclass
class Signed:
    server: TestServer
    cookie: str
    csrf: str
    partner_id: str
    secret: str


@pytest.fixture
async def signed(redis: Redis, settings: Settings) -> AsyncIterator[Signed]:
    partner_id, secret = await register(
        redis, settings, "seeded", "http://127.0.0.1:9/hook", ["order.created"]
    )
    server = TestServer(api.create_app(redis, settings))
    async with server, client() as http:
        csrf = await sign_in(http, f"http://127.0.0.1:{server.port}")
        [cookie] = [c.value for c in http.cookie_jar if c.key == "notifier_console"]
        yield Signed(server, cookie, csrf, partner_id, secret)


@st.composite
def console_requests(
    draw: st.DrawFn, path: str, cookie: str, csrf: str
) -> tuple[str, str, list[tuple[bytes, bytes]], bytes | None]:
    methods = [m for m, p in CONSOLE_ROUTES if p == path]
    method = draw(weighted((6, st.sampled_from(methods)), (1, ODD_METHODS)))
    ids = weighted((3, st.just(PARTNER)), (1, ODD_PATH_IDS))
    target = fill(path, draw(ids)) + draw(
        weighted(
            (2, QUERIES),
            (1, FIELDS.map(lambda q: "?" + urlencode(q, quote_via=quote))),
            (1, st.just("")),
        )
    )
    session = draw(
        weighted(
            (6, st.just(cookie)),
            (1, st.text(string.printable.strip(";, "), max_size=80)),
            (1, st.none()),
        )
    )
    headers = list(draw(EXTRA_HEADERS))
    if session is not None:
        headers.append((b"Cookie", b"notifier_console=" + session.encode()))
    form = draw(FIELDS)
    token = draw(weighted((6, st.just(csrf)), (1, st.text(max_size=50)), (1, st.none())))
    if token is not None:
        form["csrf"] = token
    body = draw(
        weighted(
            (5, st.just(urlencode(form).encode())),
            (1, st.binary(max_size=200)),
            (1, st.none()),
        )
    )
    if body is not None and not any(n.lower() == b"content-type" for n, _ in headers):
        headers.append((b"Content-Type", b"application/x-www-form-urlencoded"))
    return method, target, draw(st.permutations(headers)), body


@pytest.mark.parametrize("path", CONSOLE_PATHS)
@hsettings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_no_console_request_gets_a_5xx(
    signed: Signed, redis: Redis, path: str, data: st.DataObject
) -> None:
    method, target, headers, body = data.draw(console_requests(path, signed.cookie, signed.csrf))
    if not await redis.hexists(KS.shards[0].partners, signed.partner_id):
        raise AssertionError("no console route removes a partner")
    target = target.replace(PARTNER, signed.partner_id)
    answer = await send(signed.server, method.encode(), target.encode(), headers, body)
    assert answer.status < 500, answer
    shown = answer.body.decode("utf-8", "replace")
    assert TOKEN not in shown and signed.secret not in shown
    if answer.status == 400 and answer.headers.get("content-type", "").startswith("text/plain"):
        return  # refused by aiohttp's parser before any application saw it
    assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", "")
    assert answer.headers.get("x-content-type-options") == "nosniff"
