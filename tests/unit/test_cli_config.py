"""The CLI as a user runs it, settings validation, and /metrics after real deliveries."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from notifier import config
from notifier.admin import app
from notifier.errors import ListenError


def test_settings_defaults_are_the_documented_ones() -> None:
    s = config.load({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.api_addr == "127.0.0.1:8080"
    assert s.ingress_stream == "notifier:events"
    assert s.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert (s.request_timeout, s.claim_idle, s.secret_overlap) == (10, 60, 86400)
    assert s.max_event_bytes == 262144 and s.allow_http is False
    assert s.allowed_networks == ()


def test_every_bad_setting_is_named() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(
            {
                "NOTIFIER_RETRY_SCHEDULE": "5s,soon",
                "NOTIFIER_ALLOW_HTTP": "maybe",
                "NOTIFIER_ALLOWED_NETWORKS": "10.0.0.0/33",
                "REDIS_URL": "localhost",
                "NOTIFIER_MAX_EVENT_BYTES": "-1",
                "NOTIFIER_API_ADDR": "nowhere",
            }
        )
    text = str(err.value)
    for var in (
        "NOTIFIER_RETRY_SCHEDULE",
        "NOTIFIER_ALLOW_HTTP",
        "NOTIFIER_ALLOWED_NETWORKS",
        "REDIS_URL",
        "NOTIFIER_MAX_EVENT_BYTES",
        "NOTIFIER_API_ADDR",
    ):
        assert var in text
    with pytest.raises(config.ConfigError, match="NOTIFIER_CLAIM_IDLE"):
        config.load({"NOTIFIER_REQUEST_TIMEOUT": "30s", "NOTIFIER_CLAIM_IDLE": "20s"})


def test_the_readme_settings_table_is_the_declarations() -> None:
    """Each setting is declared once (notifier/config.py); the README shows exactly that."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert config.table() in readme, "README's settings table differs from:\n" + config.table()


def test_bad_settings_never_echo_a_secret() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(
            {
                "NOTIFIER_SECRET_KEY": "hunter2-not-a-key",
                "REDIS_URL": "redis://user:hunter2@redis:6379/x",
                "NOTIFIER_MAX_EVENT_BYTES": "abc",
            }
        )
    text = str(err.value)
    assert "hunter2" not in text
    assert "NOTIFIER_SECRET_KEY" in text and "REDIS_URL='redis://user:***@redis" in text
    assert "must be a whole number of bytes" in text and "invalid literal" not in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("NOTIFIER_RETRY_SCHEDULE", "99999999999999d"),
        ("NOTIFIER_RETRY_SCHEDULE", "1s," * 51),
        ("NOTIFIER_REQUEST_TIMEOUT", "400d"),
        ("NOTIFIER_CONCURRENCY", "10000000"),
        ("NOTIFIER_MAX_EVENT_BYTES", "99999999999"),
        ("NOTIFIER_API_ADDR", "host:99999"),
        ("NOTIFIER_MAX_EVENT_BYTES", "²"),
    ],
)
def test_numbers_are_bounded_to_what_redis_lua_and_timers_hold(var: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=var):
        config.load({var: value})


async def test_an_api_address_that_never_resolves_is_refused_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A DNS server that does not answer holds getaddrinfo for as long as the resolver
    retries; the api gives up after RESOLVE_SECONDS and names the setting, and the thread
    still resolving does not hold the process's exit (a daemon, not asyncio's executor)."""
    release = threading.Event()

    def unanswered(*args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", unanswered)
    monkeypatch.setattr(app, "RESOLVE_SECONDS", 0.05)
    settings = config.load({"NOTIFIER_API_ADDR": "slow-dns.example:8080"})
    try:
        with pytest.raises(ListenError) as refused:
            await asyncio.wait_for(app.serve(web.Application(), settings), 5)
        assert "NOTIFIER_API_ADDR=slow-dns.example:8080" in str(refused.value)
        assert "did not resolve in time" in str(refused.value)
        resolving = [t for t in threading.enumerate() if t.name == "resolve NOTIFIER_API_ADDR"]
        assert resolving and all(t.daemon for t in resolving)
    finally:
        release.set()
