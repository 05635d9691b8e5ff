"""The console over plain HTTP against a real Redis: sign-in and its cookie, sessions kept in
Redis, the CSRF token every action needs (refused with 403 and nothing changed without it), the
headers of every page, and hostile requests that never get a 5xx or see the token.

What a person sees and does in a browser is tests/integration/test_console_browser.py's."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer, make_mocked_request
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.config import Settings
from notifier.console import sessions, signin
from notifier.console.views import LIVE_HEADER
from notifier.redis import keys
from tests.console import client, sign_in
from tests.helpers import (
    KS,
    TOKEN,
    EndpointFactory,
    dead_letter,
    eventually,
    publish,
    register,
    running,
)


@dataclass
class Console:
    server: TestServer
    base: str
    partner_id: str
    secret: str


@pytest.fixture
async def console(redis: Redis, settings: Settings) -> AsyncIterator[Console]:
    """The api (and so the console) in this process, with a partner and a dead letter."""
    partner_id, secret = await register(
        redis, settings, "seeded", "http://127.0.0.1:9/hook", ["order.created"]
    )
    await dead_letter(redis, partner_id, "msg_dead", "1-1")
    server = TestServer(api.create_app(redis, settings))
    async with server:
        yield Console(server, f"http://127.0.0.1:{server.port}", partner_id, secret)


async def state(redis: Redis, partner_id: str) -> tuple[object, int, int]:
    """What an action could change: the partner's record, the dead letters, its stream."""
    record = await redis.hget(KS.shards[0].partners, partner_id)
    return record, await redis.xlen(keys.DEAD), await redis.xlen(KS.partner(partner_id).stream)


async def test_sign_in_sets_a_strict_httponly_cookie_and_a_session_in_redis(
    console: Console, redis: Redis
) -> None:
    async with client() as http:
        async with http.post(
            f"{console.base}/console/login", data={"token": TOKEN}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console"
            cookie = resp.headers["Set-Cookie"]
        session_id = re.match(r"notifier_console=([^;]+);", cookie)
        assert session_id, cookie
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "max-age", "path"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attributes  # plain http on loopback: a browser would drop it
        assert TOKEN not in cookie
        # Redis keeps the id's hash, never the id, and for the session's life at most
        hashed = hashlib.sha256(session_id.group(1).encode()).hexdigest()
        key = keys.CONSOLE_SESSION + hashed
        assert 0 < await redis.ttl(key) <= sessions.LIFETIME_S
        assert not await redis.keys(f"*{session_id.group(1)}*")
        async with http.get(f"{console.base}/console") as resp:
            assert resp.status == 200 and "seeded" in await resp.text()


async def test_a_wrong_token_shows_the_form_again_and_sets_no_session(
    console: Console, redis: Redis
) -> None:
    async with client() as http:
        for wrong in ("", "nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper()):
            async with http.post(
                f"{console.base}/console/login", data={"token": wrong}, allow_redirects=False
            ) as resp:
                page = await resp.text()
                assert resp.status == 401 and "Set-Cookie" not in resp.headers
                assert "That is not the admin token." in page and 'name="token"' in page
                assert not wrong or f'value="{wrong}"' not in page
        assert not await redis.keys(keys.CONSOLE_SESSION + "*")
        async with http.get(f"{console.base}/console", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"


async def test_every_page_without_a_session_redirects_to_the_sign_in(console: Console) -> None:
    async with client() as http:
        for path in (
            "/console",
            f"/console/partners/{console.partner_id}",
            "/console/dead-letters",
            "/console/messages/msg_dead",
            "/console/nothing/here",
        ):
            for cookie in ({}, {"notifier_console": "forged"}, {"notifier_console": "x" * 5000}):
                # a POST too, even where no form posts: every page, whatever the method
                for method in ("GET", "POST"):
                    async with http.request(
                        method, console.base + path, cookies=cookie, allow_redirects=False
                    ) as resp:
                        assert resp.status == 303, (method, path)
                        assert resp.headers["Location"] == "/console/login"


ACTIONS = [
    ("/console/partners/{id}/disable", {}),
    ("/console/partners/{id}/enable", {}),
    ("/console/partners/{id}/test", {}),
    ("/console/partners/{id}/rotate", {"confirm": "yes"}),
    ("/console/partners/{id}/messages/msg_dead/resend", {}),
    ("/console/partners/{id}/recover", {"since": "2000-01-01T00:00:00"}),
    ("/console/dead-letters/replay", {"id": "1-1"}),
    ("/console/dead-letters/replay-all", {"confirm": "yes"}),
    ("/console/logout", {}),
]


@pytest.mark.parametrize(("path", "form"), ACTIONS, ids=[p for p, _ in ACTIONS])
async def test_every_action_without_its_csrf_token_is_403_and_changes_nothing(
    console: Console, redis: Redis, path: str, form: dict[str, str]
) -> None:
    target = console.base + path.replace("{id}", console.partner_id)
    async with client() as http:
        csrf = await sign_in(http, console.base)
        async with client() as other:  # another session's token is no token of this one
            others = await sign_in(other, console.base)
        before = await state(redis, console.partner_id)
        for given in (None, "", "wrong", csrf[:-1], others, csrf + " "):
            body = dict(form) if given is None else {**form, "csrf": given}
            async with http.post(target, data=body, allow_redirects=False) as resp:
                assert resp.status == 403, (given, resp.status)
                assert "nothing was changed" in await resp.text()
            assert await state(redis, console.partner_id) == before
        # the session is still there: a logout without the token did not end it
        async with http.get(f"{console.base}/console", allow_redirects=False) as resp:
            assert resp.status == 200
        # and with the token, the same request goes through
        async with http.post(target, data={**form, "csrf": csrf}, allow_redirects=False) as resp:
            assert resp.status in (200, 303), resp.status


async def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(
    console: Console, redis: Redis
) -> None:
    async with client() as http:
        csrf = await sign_in(http, console.base)
        cookie = {c.key: c.value for c in http.cookie_jar}
        async with http.post(
            f"{console.base}/console/logout", data={"csrf": csrf}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"
            assert "notifier_console=" in resp.headers["Set-Cookie"]  # cleared
    assert not await redis.keys(keys.CONSOLE_SESSION + "*")
    # the old cookie, kept by someone, opens nothing
    async with (
        client() as replay,
        replay.get(f"{console.base}/console", cookies=cookie, allow_redirects=False) as resp,
    ):
        assert resp.status == 303


CSP_NEEDS = ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'")


def check_headers(resp: aiohttp.ClientResponse, path: str) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    assert all(need in csp for need in CSP_NEEDS), (path, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert resp.headers.get("X-Content-Type-Options") == "nosniff", path


async def test_every_page_carries_the_security_headers_and_loads_nothing_from_elsewhere(
    console: Console,
) -> None:
    async with client() as http:
        for path in ("/console/login", "/console", "/console/x"):  # no session yet
            async with http.get(console.base + path, allow_redirects=False) as resp:
                check_headers(resp, path)
        csrf = await sign_in(http, console.base)
        pages = [
            "/console",
            "/console?q=seed&group=owner",
            f"/console/partners/{console.partner_id}",
            f"/console/partners/{console.partner_id}?state=dead",
            "/console/dead-letters",
            f"/console/dead-letters?partner={console.partner_id}",
            "/console/messages/nope",
            "/console/partners/nope",
            "/console/no/such/page",
            "/console/static/console.js",
            "/console/static/console.css",
            "/console/static/nope.js",
        ]
        for path in pages:
            async with http.get(console.base + path, allow_redirects=False) as resp:
                check_headers(resp, path)
                assert resp.status < 500
                page = await resp.text()
                if resp.content_type == "text/html":
                    assert "<script>" not in page and " on" + "error=" not in page
                    # every src and href is of this origin: a path, never //host or scheme:
                    for link in re.findall(r'(?:src|href|action)="([^"]*)"', page):
                        assert link.startswith(("/console", "?")), (path, link)
                    assert TOKEN not in page
        async with http.post(
            f"{console.base}/console/dead-letters/replay-all", data={"csrf": csrf}
        ) as resp:  # a confirmation page
            check_headers(resp, "replay-all")
            assert "Confirm" in await resp.text()


async def test_the_token_never_appears_in_a_page_or_a_url(console: Console) -> None:
    async with client() as http:
        async with http.post(f"{console.base}/console/login", data={"token": TOKEN}) as resp:
            visited = [str(r.url) for r in (*resp.history, resp)]
            page = await resp.text()
        assert all(TOKEN not in url for url in visited) and TOKEN not in page
        async with http.get(f"{console.base}/console/login") as resp:
            assert TOKEN not in await resp.text()


def test_the_cookie_is_secure_off_loopback_and_behind_https() -> None:
    class Transport:
        def __init__(self, host: str) -> None:
            self.host = host

        def get_extra_info(self, name: str) -> object:
            return (self.host, 8080) if name == "sockname" else None

    def request(host: str, headers: dict[str, str] | None = None) -> aiohttp.web.Request:
        made = make_mocked_request("GET", "/console/login", headers=headers or {})
        made._transport_peername = None  # type: ignore[attr-defined]
        made.protocol.transport = Transport(host)  # type: ignore[union-attr,assignment]
        return made

    assert not sessions.needs_secure_cookie(request("127.0.0.1"))
    assert not sessions.needs_secure_cookie(request("::1"))
    assert sessions.needs_secure_cookie(request("10.1.2.3"))
    assert sessions.needs_secure_cookie(request("0.0.0.0"))
    assert sessions.needs_secure_cookie(request("127.0.0.1", {"X-Forwarded-Proto": "https"}))


@pytest.mark.cluster
async def test_every_page_and_action_works_on_one_redis_and_on_a_cluster(
    backend: str, console: Console, redis: Redis
) -> None:
    """Sessions, notices, the history and the pages' reads are single-key commands or
    pipelines that a Cluster client splits by slot."""
    base, pid = console.base, console.partner_id
    async with client() as http:
        csrf = await sign_in(http, base)
        [session_id] = [c.value for c in http.cookie_jar if c.key == "notifier_console"]
        key = keys.CONSOLE_SESSION + hashlib.sha256(session_id.encode()).hexdigest()
        assert await redis.exists(key)
        for path in ("/console", f"/console/partners/{pid}", "/console/dead-letters"):
            async with http.get(base + path) as resp:
                assert resp.status == 200, (backend, path)
                assert "seeded" in await resp.text()
        async with http.post(f"{base}/console/partners/{pid}/disable", data={"csrf": csrf}) as r:
            assert "seeded: disabled." in await r.text()  # the notice, read back once
        async with http.get(f"{base}/console/partners/{pid}") as resp:
            assert "seeded: disabled." not in await resp.text()
        async with http.post(f"{base}/console/logout", data={"csrf": csrf}) as resp:
            assert str(resp.url).endswith("/console/login")
    assert not await redis.exists(
        *[k async for k in redis.scan_iter("notifier:console:*")] or ["none"]
    )


async def test_a_message_whose_id_holds_url_characters_is_found_and_resent(
    console: Console, redis: Redis, settings: Settings
) -> None:
    odd = "ord/1?x=#y%z&"
    async with running(settings, deliver=False):
        await publish(redis, "order.created", {"n": 1}, event_id=odd)
        await idle_router(redis)
    async with client() as http:
        csrf = await sign_in(http, console.base)
        async with http.get(f"{console.base}/console/messages", params={"id": odd}) as resp:
            assert resp.status == 200
            page = await resp.text()
        assert '<span class="id">ord/1?x=#y%z&amp;</span>' in page  # the id, escaped as text
        [action] = re.findall(r'action="([^"]*/resend)"', page)
        async with http.post(
            console.base + action.replace("&amp;", "&"), data={"csrf": csrf, "back": "message"}
        ) as resp:
            page = await resp.text()
        assert '<span class="id">ord/1?x=#y%z&amp;</span>' in page  # back on its page
        assert "ord/1?x=#y%z&amp;: sent again (same webhook-id)." in page


async def idle_router(redis: Redis) -> None:
    async def routed() -> bool:
        return not await redis.xlen("notifier:events")

    await eventually(routed, 20, "the event to be routed")


async def test_guessing_the_token_is_slowed_to_ten_tries_a_minute(
    console: Console, redis: Redis
) -> None:
    async with client() as http:
        for n in range(signin.MOST_WRONG):
            async with http.post(
                f"{console.base}/console/login", data={"token": f"guess-{n}"}
            ) as resp:
                assert resp.status == 401
        # now even the right token waits: else the guessing would go on, only unanswered
        async with http.post(
            f"{console.base}/console/login", data={"token": TOKEN}, allow_redirects=False
        ) as resp:
            assert resp.status == 429 and "Set-Cookie" not in resp.headers
            assert 0 < int(resp.headers["Retry-After"]) <= signin.WINDOW_S
            assert "Too many wrong tokens" in await resp.text()
    assert not await redis.keys(keys.CONSOLE_SESSION + "*")


async def test_the_first_look_at_the_overview_already_has_its_rates(
    console: Console, redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """Rates are the change between two of the processes' reports (2 s apart), which a single
    look cannot see: the api reads the reports while it runs, so a first look shows a
    partner's deliveries a second rather than "…" until the page's next refresh."""
    endpoint = await endpoint_factory()
    await register(redis, settings, "busy", endpoint.url, ["order.created"])
    seen: dict[bytes | str, set[bytes | str]] = {}

    async def reported_four_times() -> bool:
        for name, raw in (await redis.hgetall(keys.PROCESSES)).items():
            seen.setdefault(name, set()).add(raw)
        return any(len(reports) >= 4 for reports in seen.values())

    async with running(settings):
        for n in range(50):
            await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(50)
        await eventually(reported_four_times, 20, "four reports of a process")
        async with client() as http:
            await sign_in(http, console.base)
            async with http.get(f"{console.base}/console", headers={LIVE_HEADER: "1"}) as resp:
                live = await resp.text()
    assert resp.status == 200
    assert "…" not in live
    assert re.search(r"[0-9]+\.[0-9] deliveries/s", live), live
