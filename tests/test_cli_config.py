"""The CLI as a user runs it, settings validation, and /metrics after real deliveries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import pytest
import standardwebhooks
from redis.asyncio import Redis

from notifier import config
from tests.helpers import free_port, idle, running


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifier", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def test_settings_defaults_follow_the_contract() -> None:
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
        config.load({"NOTIFIER_RETRY_SCHEDULE": "5s,soon", "NOTIFIER_ALLOW_HTTP": "maybe",
                     "NOTIFIER_ALLOWED_NETWORKS": "10.0.0.0/33", "REDIS_URL": "localhost",
                     "NOTIFIER_MAX_EVENT_BYTES": "-1", "NOTIFIER_API_ADDR": "nowhere"})
    text = str(err.value)
    for var in ("NOTIFIER_RETRY_SCHEDULE", "NOTIFIER_ALLOW_HTTP", "NOTIFIER_ALLOWED_NETWORKS",
                "REDIS_URL", "NOTIFIER_MAX_EVENT_BYTES", "NOTIFIER_API_ADDR"):
        assert var in text
    with pytest.raises(config.ConfigError, match="NOTIFIER_CLAIM_IDLE"):
        config.load({"NOTIFIER_REQUEST_TIMEOUT": "30s", "NOTIFIER_CLAIM_IDLE": "20s"})


def test_a_bad_setting_stops_start_up(env: dict[str, str]) -> None:
    result = cli({**env, "NOTIFIER_REQUEST_TIMEOUT": "fast"}, "run")
    assert result.returncode != 0
    assert "NOTIFIER_REQUEST_TIMEOUT" in result.stderr


async def test_cli_manages_partners_and_publishes(redis: Redis, env: dict[str, str],
                                                  settings: config.Settings,
                                                  endpoint_factory) -> None:
    endpoint = await endpoint_factory()
    added = cli(env, "partners", "add", "shop", endpoint.url, "--events",
                "order.created,order.paid", "--rate-limit", "100/second")
    assert added.returncode == 0, added.stderr
    partner = json.loads(added.stdout)
    assert partner["events"] == ["order.created", "order.paid"]
    secret = partner["secret"]

    listed = json.loads(cli(env, "partners", "list").stdout)
    assert [p["id"] for p in listed] == [partner["id"]] and secret not in str(listed)
    shown = json.loads(cli(env, "partners", "show", partner["id"]).stdout)
    assert shown["rate_limit"] == "100/second"

    published = cli(env, "publish", "order.paid", '{"order_id": 9}', "--id", "ord-9-paid")
    assert published.returncode == 0, published.stderr
    async with running(settings):
        await endpoint.wait_for(1)
        await idle(redis)
    received = endpoint.received[0]
    assert received.headers["webhook-id"] == "ord-9-paid"
    standardwebhooks.Webhook(secret).verify(received.body, received.headers)

    attempts = json.loads(cli(env, "attempts", partner["id"]).stdout)
    assert [(a["message_id"], a["status"], a["ok"]) for a in attempts] == [
        ("ord-9-paid", 200, True)]

    bad = cli(env, "partners", "add", "x", "ftp://x.example.com", "--events", "*")
    assert bad.returncode != 0 and "url" in bad.stderr
    missing = cli(env, "partners", "show", "ptn_nope")
    assert missing.returncode != 0 and "no partner" in missing.stderr
    assert cli(env, "partners", "remove", partner["id"]).returncode == 0
    assert json.loads(cli(env, "partners", "list").stdout) == []


async def test_metrics_show_each_partners_deliveries(redis: Redis, settings: config.Settings,
                                                     endpoint_factory) -> None:
    from tests.helpers import publish, register

    port = free_port()
    settings = msgspec.structs.replace(settings, api_addr=f"127.0.0.1:{port}")
    endpoint = await endpoint_factory()
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings, serve_api=True):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
        await idle(redis)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    lines = [line for line in text.splitlines() if f'partner="{pid}"' in line]
    assert any(line.startswith("notifier_delivery_attempts_total") and 'result="success"' in line
               for line in lines)
    assert any(line.startswith("notifier_delivery_duration_milliseconds_count")
               for line in lines)


def test_the_readme_settings_table_is_the_declarations() -> None:
    """Each setting is declared once (notifier/config.py); the README shows exactly that."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert config.table() in readme, "README's settings table differs from:\n" + config.table()


def test_bad_settings_never_echo_a_secret() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load({"NOTIFIER_SECRET_KEY": "hunter2-not-a-key",
                     "REDIS_URL": "redis://user:hunter2@redis:6379/x",
                     "NOTIFIER_MAX_EVENT_BYTES": "abc"})
    text = str(err.value)
    assert "hunter2" not in text
    assert "NOTIFIER_SECRET_KEY" in text and "REDIS_URL='redis://user:***@redis" in text
    assert "must be a whole number of bytes" in text and "invalid literal" not in text
    assert "\n" not in text


@pytest.mark.parametrize(("var", "value"), [
    ("NOTIFIER_RETRY_SCHEDULE", "99999999999999d"), ("NOTIFIER_RETRY_SCHEDULE", "1s," * 51),
    ("NOTIFIER_REQUEST_TIMEOUT", "400d"), ("NOTIFIER_CONCURRENCY", "10000000"),
    ("NOTIFIER_MAX_EVENT_BYTES", "99999999999"), ("NOTIFIER_API_ADDR", "host:99999"),
    ("NOTIFIER_MAX_EVENT_BYTES", "²"),
])
def test_numbers_are_bounded_to_what_redis_lua_and_timers_hold(var: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=var):
        config.load({var: value})
