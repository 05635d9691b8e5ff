"""Preview: for a routed message the body is byte for byte what the partner's endpoint
received and the headers verify; for an event, each reason it would not be delivered; an
unsaved partner; nothing is ever sent."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import pytest
import standardwebhooks
from aiohttp import web
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.config import Settings
from tests.helpers import TOKEN, EndpointFactory, cli, idle, publish, register, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = aiohttp.test_utils.TestClient[web.Request, web.Application]
SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
TRANSFORM = {
    "by_type": {
        "order.created": {
            "omit": ["data.customer"],
            "rename": {"data.total": "data.amount"},
        },
        "*": {"require": ["data.order_id"], "map": {"kind": "$.type", "id": "$.data.order_id"}},
    }
}
DATA = {"order_id": 7, "total": 120.5, "customer": {"email": "ann@example.com"}, "note": "é"}


@pytest.fixture
async def http(redis: Redis, settings: Settings) -> AsyncIterator[Client]:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield client


async def previewed(http: Client, path: str, body: dict[str, Any], status: int = 200) -> Any:
    resp = await http.post(path, json=body, headers=AUTH)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_a_routed_messages_preview_is_what_the_endpoint_received(
    redis: Redis, settings: Settings, http: Client, endpoint_factory: EndpointFactory
) -> None:
    endpoint = await endpoint_factory()
    pid, secret = await register(
        redis,
        settings,
        "shop",
        endpoint.url,
        ["*"],
        transform=TRANSFORM,
        owner="acme",
        filter={"data.total": {"$gt": 100}},
        headers={"x-api-key": "k"},
    )
    async with running(settings):
        await publish(redis, "order.created", DATA, event_id="ord-7")
        await endpoint.wait_for(1)
        await idle(redis)
    got = endpoint.received[0]
    shown = await previewed(http, f"/v1/partners/{pid}/preview", {"message_id": "ord-7"})
    assert shown["delivered"] is True and shown["reason"] is None
    assert shown["body"].encode() == got.body  # byte for byte
    headers = shown["headers"]
    assert headers["webhook-id"] == "ord-7" and headers["x-api-key"] == "k"
    assert headers["content-type"] == got.headers["Content-Type"]
    assert standardwebhooks.Webhook(secret).verify(shown["body"], headers)
    assert len(endpoint.received) == 1  # nothing was sent
    missing = await previewed(http, f"/v1/partners/{pid}/preview", {"message_id": "nope"}, 404)
    assert missing["error"].startswith("no message 'nope'")


async def test_why_an_event_would_not_be_delivered(
    redis: Redis, settings: Settings, http: Client, endpoint_factory: EndpointFactory
) -> None:
    endpoint = await endpoint_factory()
    pid, _ = await register(
        redis,
        settings,
        "shop",
        endpoint.url,
        ["order.created", "order.paid"],
        transform=TRANSFORM,
        owner="acme",
        filter={"data.total": {"$gt": 100}},
    )
    schema = {"type": "object", "properties": {"total": {"type": "number", "maximum": 1000}}}
    await http.put(
        "/v1/event-types/order.created", json={"description": "x", "schema": schema}, headers=AUTH
    )
    path = f"/v1/partners/{pid}/preview"

    async def why(event: dict[str, Any]) -> tuple[bool, str | None, str]:
        shown = await previewed(http, path, {"event": event})
        return shown["delivered"], shown["reason"], shown["body"]

    big = {"type": "order.created", "data": DATA}
    delivered, reason, body = await why(big)
    assert (delivered, reason) == (True, None)
    assert json.loads(body)["data"] == {"order_id": 7, "note": "é", "amount": 120.5}
    assert await why({**big, "type": "refund.issued"}) == (
        False,
        "not subscribed: it takes order.created, order.paid, not refund.issued",
        '{"kind":"refund.issued","id":7}',
    )
    assert (await why({**big, "owner": "globex"}))[:2] == (
        False,
        "owner: the event belongs to 'globex', the partner to 'acme'",
    )
    assert (await why({**big, "owner": "acme"}))[:2] == (True, None)
    assert (await why({**big, "data": {"total": 5}}))[:2] == (
        False,
        'filter: data.total: {"$gt":100} does not hold',
    )
    assert (await why({**big, "data": {"total": 5000}}))[:2] == (
        False,
        "schema: data.total: maximum 1000",
    )
    assert await why({"type": "order.paid", "data": {"total": 500}}) == (
        False,
        "transform: require: data.order_id is missing from the event",
        "",
    )
    refused = await previewed(http, path, {"event": {"type": "Bad", "data": {}}}, 400)
    assert refused["error"].startswith("event: type 'Bad' may only contain")
    both = await previewed(http, path, {"event": big, "message_id": "x"}, 400)
    assert both["error"] == 'give either "event" or "message_id"'
    assert endpoint.received == []
    assert not await redis.keys("notifier:{*}:stream")  # nothing was routed either


async def test_an_unsaved_partner(http: Client, redis: Redis) -> None:
    partner = {
        "name": "draft",
        "url": "https://draft.example.com/hook",
        "events": ["*"],
        "transform": {"pick": ["data.order_id"]},
        "secret": SECRET,
    }
    shown = await previewed(
        http, "/v1/preview", {"partner": partner, "event": {"type": "a", "data": DATA, "id": "x"}}
    )
    assert shown["delivered"] is True
    assert shown["body"] == '{"data":{"order_id":7}}'
    assert standardwebhooks.Webhook(SECRET).verify(shown["body"], shown["headers"])
    assert await redis.hlen("notifier:partners") == 0  # not saved
    bad = await previewed(
        http,
        "/v1/preview",
        {"partner": {**partner, "url": "ftp://x"}, "event": {"type": "a", "data": {}}},
        400,
    )
    assert bad["error"] == "partner.url: ftp://x: scheme must be https or http, not ftp"
    asym = await previewed(
        http,
        "/v1/preview",
        {
            "partner": {**partner, "secret": None, "signature": "v1a"},
            "event": {"type": "a", "data": {}},
        },
    )
    assert asym["headers"]["webhook-signature"].startswith("v1a,")


async def test_the_cli_previews_from_a_file(
    env: dict[str, str], redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pid, _ = await register(
        redis, settings, "shop", "https://x.example.com", ["a"], filter={"data.n": 1}
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "a", "data": {"n": 2}}))
    done = cli(env, "preview", pid, str(event))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["delivered"] is False
    assert shown["reason"] == "filter: data.n: 1 does not hold"
    assert shown["body"].endswith('"data":{"n":2}}')
    event.write_text(json.dumps({"event": {"type": "a", "data": {"n": 1}}}))
    assert json.loads(cli(env, "preview", pid, str(event)).stdout)["delivered"] is True
    event.write_text(json.dumps({"message_id": "nope"}))  # a routed message, by its id
    done = cli(env, "preview", pid, str(event))
    assert done.returncode == 1 and done.stderr.startswith("notifier: error: no message 'nope'")
    event.write_text("[1]")
    done = cli(env, "preview", pid, str(event))
    assert done.returncode == 1 and done.stderr.startswith("notifier: error: FILE: must hold")
