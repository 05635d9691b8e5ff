"""The console in a real browser (Debian's chromium, driven by Playwright) against a live
`notifier run` and real partner endpoints on loopback: what an operator sees and does.

Each view is saved as a screenshot under .screenshots/ as the tests run; docs/ keeps two of
them for the README."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.redis import keys
from tests.console import SCREENSHOTS, chromium
from tests.helpers import (
    TOKEN,
    EndpointFactory,
    Spawn,
    eventually,
    free_port,
    publish,
    register,
    stop_running,
)

pytestmark = pytest.mark.slow

#: A partner name and an answer that would run script if any page let them.
HOSTILE_NAME = '<img src=x onerror="window.__pwned = 1">'
HOSTILE_ANSWER = "<script>window.__pwned = 2</script> overloaded"
HOSTILE_NOTE = "<script>window.__pwned = 3</script>"
LONG_WAIT_MS = 30_000  # what the history's leader, every 5 s, may take


@dataclass
class Live:
    base: str
    procs: list[Any]


@pytest.fixture
async def live(spawn: Spawn) -> AsyncIterator[Live]:
    """`notifier run` with its api (and so the console) on a free loopback port."""
    addr = f"127.0.0.1:{free_port()}"
    proc = spawn("run", extra={"NOTIFIER_API_ADDR": addr, "NOTIFIER_LOG_LEVEL": "info"})

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://{addr}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, 30, "notifier run to answer")
    yield Live(f"http://{addr}", [proc])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def signed_in(browser: Browser, base: str, **options: Any) -> Page:
    page = await browser.new_page(**options)
    await page.goto(f"{base}/console")
    await page.wait_for_url(f"{base}/console/login")
    await page.fill("#token", TOKEN)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(f"{base}/console")
    return page


async def untouched(page: Page) -> None:
    """No hostile text ran: no script side effect, no dialog, no element made of it."""
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("main img, main script").count() == 0


async def test_sign_in_and_out_and_the_token_is_never_in_a_url_or_page(
    live: Live, browser: Browser, redis: Redis
) -> None:
    page = await browser.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    await page.goto(f"{live.base}/console")
    await page.wait_for_url(f"{live.base}/console/login")
    await shot(page, "login")
    await page.fill("#token", "not-the-token")
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("[role=alert]")).to_have_text("That is not the admin token.")
    assert await page.context.cookies() == []
    await page.fill("#token", TOKEN)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(f"{live.base}/console")
    [cookie] = await page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain http on loopback
    assert cookie["expires"] > time.time() + 3600  # an expiry, hours ahead
    assert await page.evaluate("document.cookie") == ""  # no script can read it
    assert TOKEN not in await page.content()
    await expect(page.locator("h1")).to_have_text("Partners")
    await page.click("button:has-text('Sign out')")
    await page.wait_for_url(f"{live.base}/console/login")
    assert not await redis.keys(keys.CONSOLE_SESSION + "*")
    await page.goto(f"{live.base}/console")
    await page.wait_for_url(f"{live.base}/console/login")
    assert urls and all(TOKEN not in url for url in urls)
    logged = stop_running(live.procs)[0]
    assert "console sign-in" in logged and "console sign-in refused" in logged
    assert TOKEN not in logged


async def test_a_failing_partner_shows_as_failing_and_its_hostile_text_never_runs(
    live: Live,
    browser: Browser,
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
) -> None:
    async def overloaded(request: web.Request, n: int) -> web.Response:
        return web.Response(status=500, text=HOSTILE_ANSWER)

    bad = await endpoint_factory(overloaded)
    good = await endpoint_factory()
    bad_id, _ = await register(redis, settings, HOSTILE_NAME, bad.url, ["order.created"])
    await register(redis, settings, "shipping", good.url, ["order.created"], owner="acme")
    for n in range(3):
        await publish(redis, "order.created", {"note": HOSTILE_NOTE, "n": n})
    await bad.wait_for(12)  # 3 messages, 4 tries each (the first and 3 retries)
    page = await signed_in(browser, live.base)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    errors: list[str] = []  # the console's own pages break no rule of their CSP either
    page.on("console", lambda message: errors.append(message.text))
    first = page.locator("#live tbody tr").first
    # worst first, shown failing once the leader has counted its failures
    await expect(first.locator(".state")).to_have_text("breaker open", timeout=LONG_WAIT_MS)
    await expect(first.locator("a.partner-name")).to_have_text(HOSTILE_NAME)
    await expect(first.locator("td[data-label^='Errors']")).to_have_text("100%")
    await shot(page, "overview")
    await untouched(page)

    await first.locator("a.partner-name").click()
    await page.wait_for_url(f"{live.base}/console/partners/{bad_id}")
    await expect(page.locator("h1 .partner-name")).to_have_text(HOSTILE_NAME)
    excerpt = page.locator("#live table.attempts td.excerpt").first
    await expect(excerpt).to_have_text(f"HTTP 500: {HOSTILE_ANSWER}")
    await expect(page.locator("#live .state-summary .state")).to_have_text("breaker open")
    await page.wait_for_selector("#live svg rect.failed", timeout=LONG_WAIT_MS)
    assert "12 failed" in await page.locator("#live figcaption").inner_text()
    await shot(page, "partner")
    await untouched(page)

    message_link = page.locator("table.messages a").first
    await message_link.click()
    await expect(page.locator("pre.data")).to_contain_text(HOSTILE_NOTE)
    await shot(page, "message")
    await untouched(page)
    await page.click("nav >> text=Dead letters")
    await expect(page.locator("table.dead-letters a.partner-name").first).to_have_text(HOSTILE_NAME)
    await expect(page.locator("table.dead-letters td.excerpt").first).to_contain_text(
        HOSTILE_ANSWER
    )
    await untouched(page)
    assert dialogs == []
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


async def test_the_overview_refreshes_itself(
    live: Live, browser: Browser, redis: Redis, settings: Settings
) -> None:
    await register(redis, settings, "first", "http://127.0.0.1:9/a", ["order.created"])
    page = await signed_in(browser, live.base)
    await expect(page.locator("#live tbody")).to_contain_text("first")
    await page.evaluate("window.__same_page = true")
    await register(redis, settings, "arrived-later", "http://127.0.0.1:9/b", ["order.created"])
    await expect(page.locator("#live tbody")).to_contain_text("arrived-later", timeout=10_000)
    assert await page.evaluate("window.__same_page") is True  # swapped in, not reloaded
    assert int(await page.locator("#live").get_attribute("data-refreshes") or 0) >= 1
    # the search box narrows the table, and the refresh keeps to the search
    await page.fill("#q", "arrived")
    await page.click("button:has-text('Search')")
    await expect(page.locator("#live tbody tr")).to_have_count(1)
    await expect(page.locator("#live tbody")).to_contain_text("arrived-later")


async def test_a_dead_letter_replayed_from_the_page_arrives_at_the_endpoint(
    live: Live,
    browser: Browser,
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
) -> None:
    broken = {"now": True}

    async def until_fixed(request: web.Request, n: int) -> web.Response:
        return web.Response(status=503 if broken["now"] else 200)

    endpoint = await endpoint_factory(until_fixed)
    pid, _ = await register(redis, settings, "flaky", endpoint.url, ["order.created"])
    for n in range(3):
        await publish(redis, "order.created", {"n": n})
    await eventually(lambda: redis_dead(redis, 3), 30, "three dead letters")
    broken["now"] = False
    seen = len(endpoint.received)

    page = await signed_in(browser, live.base)
    await page.click("nav >> text=Dead letters")
    await expect(page.locator("table.dead-letters button:has-text('Replay')")).to_have_count(3)
    await expect(page.locator("table.dead-letters a.partner-name").first).to_have_text("flaky")
    await page.locator("table.dead-letters summary").first.click()  # inspect
    await expect(page.locator("table.dead-letters pre.data").first).to_be_visible()
    await shot(page, "dead-letters")
    await page.locator("table.dead-letters button:has-text('Replay')").first.click()
    await expect(page.locator("[role=status]")).to_contain_text("Replayed 1")
    await endpoint.wait_for(seen + 1)
    replayed = endpoint.received[seen]
    await expect(page.locator("table.dead-letters button:has-text('Replay')")).to_have_count(2)

    await page.click("button:has-text('Replay all')")
    await expect(page.locator("h1")).to_contain_text("Replay all dead letters")
    await shot(page, "confirm")
    await page.click("button:has-text('Confirm')")
    await expect(page.locator("[role=status]")).to_contain_text("Replayed 2 dead letters")
    await endpoint.wait_for(seen + 3)
    arrived = {r.headers["webhook-id"] for r in endpoint.received[seen:]}
    assert len(arrived) == 3 and replayed.headers["webhook-id"] in arrived
    assert sorted(json.loads(r.body)["data"]["n"] for r in endpoint.received[seen:]) == [0, 1, 2]
    assert await redis.xlen(keys.DEAD) == 0
    await page.goto(f"{live.base}/console/partners/{pid}?state=delivered")
    await expect(page.locator("table.messages tbody tr")).to_have_count(3)


async def redis_dead(redis: Redis, count: int) -> bool:
    return int(await redis.xlen(keys.DEAD)) >= count


async def test_partner_actions_from_its_page(
    live: Live,
    browser: Browser,
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
) -> None:
    endpoint = await endpoint_factory()
    pid, secret = await register(redis, settings, "reviews", endpoint.url, ["order.created"])
    await publish(redis, "order.created", {"n": 1}, event_id="ord-1")
    await endpoint.wait_for(1)
    page = await signed_in(browser, live.base)
    await page.goto(f"{live.base}/console/partners/{pid}")

    await page.click("button:has-text('Send test')")
    await expect(page.locator("[role=status]")).to_contain_text("Test sent: HTTP 200")
    await endpoint.wait_for(2)
    assert json.loads(endpoint.received[1].body)["type"] == "notifier.test"

    await page.click("button:has-text('Disable')")
    await expect(page.locator("[role=status]")).to_contain_text("reviews: disabled")
    await expect(page.locator("#live .state-summary .state")).to_have_text("disabled")
    await page.click("button:has-text('Enable')")
    await expect(page.locator("[role=status]")).to_contain_text("reviews: enabled")

    await page.locator("table.messages button:has-text('Resend')").first.click()
    await expect(page.locator("[role=status]")).to_contain_text("ord-1: sent again")
    await endpoint.wait_for(3)
    assert endpoint.received[2].headers["webhook-id"] == "ord-1"

    await page.click("button:has-text('Rotate secret')")
    async with page.expect_response(lambda r: r.url.endswith("/rotate")) as rotated:
        await page.click("button:has-text('Confirm')")
    # shown this once: no cache keeps the page, and no other page shows it
    assert (await rotated.value).headers["cache-control"] == "no-store"
    shown = await page.locator("#new-secret").inner_text()
    assert shown.startswith("whsec_") and shown != secret
    await shot(page, "secret")
    await page.goto(f"{live.base}/console/partners/{pid}")
    assert shown not in await page.content()
    await publish(redis, "order.created", {"n": 2})
    await endpoint.wait_for(4)  # signed with both secrets while the old one overlaps
    assert endpoint.received[3].headers["webhook-signature"].count("v1,") == 2

    await page.fill("input[name=since]", "2000-01-01T00:00:00")
    await page.click("button:has-text('Recover')")
    await expect(page.locator("[role=status]")).to_contain_text("Recover: 0 sent again")


async def test_narrow_windows_and_no_script(
    live: Live, browser: Browser, redis: Redis, settings: Settings
) -> None:
    pid, _ = await register(
        redis, settings, "a-partner-with-a-rather-long-name", "http://127.0.0.1:9/x", ["*"]
    )
    page = await signed_in(browser, live.base, viewport={"width": 375, "height": 740})
    await expect(page.locator("#live tbody")).to_contain_text("a-partner-with-a-rather-long")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await shot(page, "overview-narrow")
    await page.goto(f"{live.base}/console/partners/{pid}")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await shot(page, "partner-narrow")
    # without script, the pages read the same (and reload themselves)
    context = await browser.new_context(java_script_enabled=False)
    [cookie] = await page.context.cookies()
    await context.add_cookies(
        [{"name": cookie["name"], "value": cookie["value"], "url": live.base}]
    )
    plain = await context.new_page()
    await plain.goto(f"{live.base}/console")
    await expect(plain.locator("#live tbody")).to_contain_text("a-partner-with-a-rather-long")
    assert await plain.locator("noscript").count() == 1
