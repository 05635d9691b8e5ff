"""The CLI as a user runs it, settings validation, and /metrics after real deliveries."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import msgspec
import standardwebhooks
from redis.asyncio import Redis

from notifier import config
from tests.helpers import EndpointFactory, cli, free_port, idle, running


def test_a_bad_setting_stops_start_up(env: dict[str, str]) -> None:
    result = cli({**env, "NOTIFIER_REQUEST_TIMEOUT": "fast"}, "run")
    assert result.returncode != 0
    assert "NOTIFIER_REQUEST_TIMEOUT" in result.stderr


async def test_cli_manages_partners_and_publishes(
    redis: Redis, env: dict[str, str], settings: config.Settings, endpoint_factory: EndpointFactory
) -> None:
    endpoint = await endpoint_factory()
    added = cli(
        env,
        "partners",
        "add",
        "shop",
        endpoint.url,
        "--events",
        "order.created,order.paid",
        "--rate-limit",
        "100/second",
    )
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
    answer = json.loads(published.stdout)  # the answer of POST /v1/events
    assert answer["id"] == "ord-9-paid" and sorted(answer) == ["entry_id", "id"]
    entries: Any = await redis.xrange("notifier:events")
    first = entries[0][0]
    assert first.decode() == answer["entry_id"]
    async with running(settings):
        await endpoint.wait_for(1)
        await idle(redis)
    received = endpoint.received[0]
    assert received.headers["webhook-id"] == "ord-9-paid"
    standardwebhooks.Webhook(secret).verify(received.body, received.headers)

    attempts = json.loads(cli(env, "attempts", partner["id"]).stdout)
    assert [(a["message_id"], a["status"], a["ok"]) for a in attempts] == [
        ("ord-9-paid", 200, True)
    ]

    rotated = json.loads(cli(env, "partners", "rotate-secret", partner["id"]).stdout)
    assert rotated["id"] == partner["id"] and rotated["public_key"] is None
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["previous_secrets_valid_for"] == "86400s"

    bad = cli(env, "partners", "add", "x", "ftp://x.example.com", "--events", "*")
    assert bad.returncode != 0 and "url" in bad.stderr
    missing = cli(env, "partners", "show", "ptn_nope")
    assert missing.returncode != 0 and "no partner" in missing.stderr
    assert cli(env, "partners", "remove", partner["id"]).returncode == 0
    assert json.loads(cli(env, "partners", "list").stdout) == []


async def test_metrics_show_each_partners_deliveries(
    redis: Redis, settings: config.Settings, endpoint_factory: EndpointFactory
) -> None:
    from tests.helpers import publish, register

    port = free_port()
    settings = msgspec.structs.replace(settings, api_addr=f"127.0.0.1:{port}")
    endpoint = await endpoint_factory()
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    async with running(settings, serve_api=True):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
        await idle(redis)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    lines = [line for line in text.splitlines() if f'partner="{pid}"' in line]
    assert any(
        line.startswith("notifier_delivery_attempts_total") and 'result="success"' in line
        for line in lines
    )
    assert any(line.startswith("notifier_delivery_duration_milliseconds_count") for line in lines)
