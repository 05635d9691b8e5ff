"""What the console's tests share: signing in over plain HTTP, reading a page's CSRF token, and
launching Debian's chromium through Playwright (no browser can be downloaded here)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from playwright.async_api import Browser, async_playwright

from tests.helpers import TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Screenshots of every view, taken as the browser tests run (gitignored).
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".screenshots"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def csrf_of(page: str) -> str:
    """The CSRF token in a page's forms."""
    found = _CSRF.search(page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def sign_in(http: aiohttp.ClientSession, base: str, token: str = TOKEN) -> str:
    """Sign in over plain HTTP (the session's cookie lands in `http`'s jar); its CSRF token."""
    async with http.post(f"{base}/console/login", data={"token": token}) as resp:
        assert resp.status == 200, resp.status  # after the redirect to /console
        assert str(resp.url).endswith("/console")
        return csrf_of(await resp.text())


def client() -> aiohttp.ClientSession:
    """A client that keeps cookies of a loopback IP address (aiohttp's jar refuses them
    unless told), follows no redirect unless asked."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
