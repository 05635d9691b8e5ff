"""Owners and filters through real routing: an owned event reaches only its owner's
subscribed partners, an unowned one every subscribed partner, a partner's filter keeps what
does not match from it (and it is counted per partner on /metrics), and the API lists one
owner's partners and refuses a bad filter or owner naming the problem."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.test_utils
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from notifier.admin import app as api
from notifier.config import Settings
from notifier.engine.router import Router
from notifier.redis.lua import Call, Scripts
from tests.helpers import (
    TOKEN,
    Endpoint,
    EndpointFactory,
    Spawn,
    eventually,
    free_port,
    idle,
    register,
    running,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = aiohttp.test_utils.TestClient[web.Request, web.Application]


@pytest.fixture
async def http(redis: Redis, settings: Settings) -> AsyncIterator[Client]:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield client


async def post_event(http: Client, body: dict[str, object]) -> None:
    resp = await http.post("/v1/events", json=body, headers=AUTH)
    assert resp.status == 202, await resp.text()


async def test_owned_events_go_to_their_owners_partners_and_filters_choose(
    redis: Redis, settings: Settings, http: Client, endpoint_factory: EndpointFactory
) -> None:
    acme, acme_big, globex, everyone = [await endpoint_factory() for _ in range(4)]
    await register(redis, settings, "acme", acme.url, ["*"], owner="acme")
    await register(
        redis,
        settings,
        "acme-big",
        acme_big.url,
        ["order.created"],
        owner="acme",
        filter={"data.total": {"$gt": 100}, "data.items[*].sku": {"$exists": True}},
    )
    await register(redis, settings, "globex", globex.url, ["order.created"], owner="globex")
    await register(redis, settings, "everyone", everyone.url, ["order.created"])
    big = {"total": 150, "items": [{"sku": "A"}]}
    async with running(settings):
        await post_event(http, {"type": "order.created", "data": {"total": 50}, "owner": "acme"})
        await post_event(http, {"type": "order.created", "data": big, "owner": "acme", "id": "b"})
        await post_event(http, {"type": "order.created", "data": big, "owner": "globex"})
        await post_event(http, {"type": "order.created", "data": big, "id": "unowned"})
        await post_event(http, {"type": "order.created", "data": big, "owner": "initech"})
        await acme.wait_for(3)
        await idle(redis)

    def totals(endpoint: Endpoint) -> list[int]:
        return [b["data"]["total"] for b in endpoint.bodies()]

    assert totals(acme) == [50, 150, 150]
    assert [r.headers["webhook-id"] for r in acme_big.received] == ["b", "unowned"]
    assert totals(globex) == [150, 150]
    assert [r.headers["webhook-id"] for r in everyone.received] == ["unowned"]
    # the owner is routing's business, not part of what a partner receives
    assert set(acme.bodies()[0]) == {"type", "timestamp", "data"}


async def test_one_owners_partners_and_what_is_refused(http: Client) -> None:
    base: dict[str, Any] = {"url": "https://x.example.com", "events": ["*"]}
    for name, owner in (("a1", "acme"), ("g", "globex"), ("a2", "acme"), ("none", None)):
        body: dict[str, Any] = {**base, "name": name, **({"owner": owner} if owner else {})}
        assert (await http.post("/v1/partners", json=body, headers=AUTH)).status == 201
    page = await (await http.get("/v1/partners?owner=acme", headers=AUTH)).json()
    assert [p["name"] for p in page["data"]] == ["a1", "a2"]
    assert all(p["owner"] == "acme" for p in page["data"])
    refused: list[tuple[dict[str, Any], str]] = [
        ({"owner": "x" * 129}, "owner must be 1 to 128 characters, got 129"),
        ({"owner": "a\nb"}, "owner may only contain printable characters"),
        ({"filter": {"data.total": {"$gtt": 1}}}, "filter: data.total: '$gtt' is not an operator"),
        ({"filter": {"total": 1}}, "filter: path 'total' does not start with type, timestamp"),
    ]
    for body, error in refused:
        resp = await http.post("/v1/partners", json={**base, "name": "n", **body}, headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["error"].startswith(error)
    for query in ("owner=", "owner=" + "x" * 129):
        resp = await http.get(f"/v1/partners?{query}", headers=AUTH)
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("owner must be 1 to 128 characters")
    resp = await http.post("/v1/events", json={"type": "a", "data": {}, "owner": ""}, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"] == "owner must be 1 to 128 characters, got 0"
    # PATCH changes and clears them
    pid = page["data"][0]["id"]
    resp = await http.patch(
        f"/v1/partners/{pid}", json={"filter": {"type": "a"}, "owner": None}, headers=AUTH
    )
    changed = await resp.json()
    assert changed["filter"] == {"type": "a"} and changed["owner"] is None


@pytest.mark.slow
async def test_filtered_events_are_counted_per_partner_on_metrics(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    endpoint = await endpoint_factory()
    picky, _ = await register(
        redis, settings, "picky", endpoint.url, ["*"], filter={"data.country": "DE"}
    )
    plain, _ = await register(redis, settings, "plain", endpoint.url, ["*"])
    addr = f"127.0.0.1:{free_port()}"
    spawn("run", extra={"NOTIFIER_METRICS_ADDR": addr})
    for country in ("FR", "DE", "FR", "IT"):
        await redis.xadd("notifier:events", {"type": "a", "data": f'{{"country": "{country}"}}'})
    await endpoint.wait_for(5)

    async def counted() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"http://{addr}/metrics") as r:
            text = await r.text()
        found = re.findall(r'notifier_filtered_total\{partner="([^"]+)"\} ([0-9.]+)', text)
        return dict(found) == {picky: "3.0"}

    await eventually(counted, 20, "notifier_filtered_total to count picky's 3")
    assert plain


async def test_a_batch_read_again_after_a_failed_call_counts_its_filtered_once(
    redis: Redis,
    settings: Settings,
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The router counts what a filter kept from a partner once the entry is acknowledged:
    counted when planned, a batch whose route call failed and that was read again counted
    its events twice."""
    endpoint = await endpoint_factory()
    picky, _ = await register(
        redis, settings, "picky", endpoint.url, ["*"], filter={"data.country": "DE"}
    )
    await register(redis, settings, "plain", endpoint.url, ["*"])
    original = Scripts.send
    failed: list[str] = []

    def failing_once(self: Scripts, call: Call[Any]) -> asyncio.Future[Any]:
        if call.script != "route" or failed:
            return original(self, call)
        failed.append(call.script)
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        refused.set_exception(RedisConnectionError("connection lost (test)"))
        return refused

    monkeypatch.setattr(Scripts, "send", failing_once)
    for country in ("FR", "DE", "IT"):
        await redis.xadd("notifier:events", {"type": "a", "data": f'{{"country": "{country}"}}'})
    router = Router(redis, settings)
    await router.ensure_group()
    with pytest.raises(RedisConnectionError):
        await router.step()
    router._own_pending_done = False  # as _run_once does after a failed step
    assert await router.step() == 3
    assert failed == ["route"]
    assert router.telemetry.metrics._filtered == {picky: 2}
    assert router.telemetry.metrics.routed_total == 3
