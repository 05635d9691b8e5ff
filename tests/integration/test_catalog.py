"""The event-type catalog: the admin API's routes and refusals, the router checking events
against a type's schema (and dead-lettering those that break it while routing goes on),
following a change without a restart, compiling a schema once per change, and the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import catalog
from notifier.admin import app as api
from notifier.config import Settings
from notifier.dead_letters import DeadLetters
from tests.helpers import TOKEN, EndpointFactory, cli, eventually, idle, publish, register, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = aiohttp.test_utils.TestClient[web.Request, web.Application]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "integer"},
        "total": {"type": "number", "minimum": 0},
        "items": {
            "type": "array",
            "prefixItems": [{"type": "object", "required": ["sku"]}],
        },
    },
    "required": ["order_id", "total"],
}
ENTRY = {
    "description": "An order was placed.",
    "schema": SCHEMA,
    "example": {"order_id": 42, "total": 99.5},
}


@pytest.fixture
async def http(redis: Redis, settings: Settings) -> AsyncIterator[Client]:
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        yield client


async def test_put_show_list_remove(http: Client) -> None:
    resp = await http.put("/v1/event-types/order.created", json=ENTRY, headers=AUTH)
    assert resp.status == 200
    saved = await resp.json()
    assert {k: saved[k] for k in ENTRY} == ENTRY
    assert saved["type"] == "order.created" and saved["deprecated"] is False
    assert saved["updated_at"].endswith("Z")
    for name in ("order.paid", "refund.issued"):
        body = {"description": name, "deprecated": name == "order.paid"}
        assert (await http.put(f"/v1/event-types/{name}", json=body, headers=AUTH)).status == 200
    shown = await (await http.get("/v1/event-types/order.created", headers=AUTH)).json()
    assert shown == saved
    page = await (await http.get("/v1/event-types?limit=2", headers=AUTH)).json()
    assert [e["type"] for e in page["data"]] == ["order.created", "order.paid"]
    assert page["data"][1]["deprecated"] is True and page["data"][1]["schema"] is None
    rest = await (
        await http.get(f"/v1/event-types?limit=2&after={page['next']}", headers=AUTH)
    ).json()
    assert [e["type"] for e in rest["data"]] == ["refund.issued"] and rest["next"] is None
    assert (await http.delete("/v1/event-types/order.paid", headers=AUTH)).status == 204
    resp = await http.get("/v1/event-types/order.paid", headers=AUTH)
    assert resp.status == 404
    assert (await resp.json())["error"] == "no event type 'order.paid' in the catalog"
    assert (await http.delete("/v1/event-types/order.paid", headers=AUTH)).status == 404
    # the version field that announces changes is never an entry
    assert (await http.get("/v1/event-types/:version", headers=AUTH)).status == 404


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        ("Order", {"description": "x"}, "type 'Order' may only contain lower-case letters"),
        ("notifier.test", {"description": "x"}, "notifier.* types are notifier's own events"),
        ("a", {"description": "x", "schema": {"type": 12}}, "schema.type: not a valid JSON"),
        (
            "a",
            {"description": "x", "schema": {"$schema": "http://json-schema.org/draft-07/schema#"}},
            "schema: $schema must be https://json-schema.org/draft/2020-12/schema",
        ),
        (
            "a",
            {"description": "x", "schema": {"$ref": "http://127.0.0.1:1/other.json"}},
            "schema: cannot be used: ",
        ),
        (
            "a",
            {"description": "x", "schema": SCHEMA, "example": {"order_id": 1, "total": -1}},
            "example: breaks the schema: data.total: minimum 0",
        ),
        (
            "a",
            {"description": "x", "schema": SCHEMA, "example": {"total": 1}},
            "example: breaks the schema: data.order_id: required",
        ),
        ("a", {"description": "x", "schema": True}, "schema: expected `object | null`, got `bool`"),
        ("a", {"schema": {}}, "Object missing required field `description`"),
        ("a", {"description": "x", "exmaple": {}}, "Object contains unknown field `exmaple`"),
    ],
)
async def test_what_is_refused_is_a_400_naming_it(
    http: Client, name: str, body: dict[str, Any], error: str
) -> None:
    resp = await http.put(f"/v1/event-types/{name}", json=body, headers=AUTH)
    assert resp.status == 400
    assert error in (await resp.json())["error"]


async def test_the_router_dead_letters_an_event_that_breaks_its_schema_and_goes_on(
    redis: Redis,
    settings: Settings,
    http: Client,
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = await endpoint_factory()
    await register(redis, settings, "all", endpoint.url, ["*"])
    compiled: list[str] = []
    original = catalog.compile_schema

    def counted(schema: dict[str, Any]) -> Any:
        compiled.append(json.dumps(schema, sort_keys=True))
        return original(schema)

    monkeypatch.setattr(catalog, "compile_schema", counted)
    await http.put("/v1/event-types/order.created", json=ENTRY, headers=AUTH)
    compiled.clear()  # the PUT checked it; what counts is the router
    async with running(settings):
        await publish(redis, "order.created", {"order_id": 1, "total": 10}, event_id="good")
        await publish(redis, "order.created", {"order_id": 2, "total": -5}, event_id="neg")
        await publish(redis, "order.created", {"order_id": 3, "total": 1, "items": [{}]})
        await publish(redis, "order.paid", {"anything": True}, event_id="no-entry")
        for n in range(20):
            await publish(redis, "order.created", {"order_id": n, "total": n})
        await endpoint.wait_for(22)
        await idle(redis)
        assert len(compiled) == 1  # once for the change, not per event
        letters = (await DeadLetters(redis, settings).page()).data
        reasons = sorted(d.reason for d in letters)
        assert reasons == ["schema: data.items[0].sku: required", "schema: data.total: minimum 0"]
        assert all(d.partner is None and d.entry is not None for d in letters)
        ids = {r.headers["webhook-id"] for r in endpoint.received}
        assert {"good", "no-entry"} <= ids and "neg" not in ids

        # a change is followed without a restart, and compiles only what changed
        looser = {**ENTRY, "schema": {**SCHEMA, "properties": {}}}
        await http.put("/v1/event-types/order.created", json=looser, headers=AUTH)
        await http.put("/v1/event-types/refund.issued", json=ENTRY, headers=AUTH)
        compiled.clear()
        await publish(redis, "order.created", {"order_id": 9, "total": -1}, event_id="neg-ok")
        await endpoint.wait_for(23)
        assert len(compiled) == 2
        await http.delete("/v1/event-types/order.created", headers=AUTH)
        await publish(redis, "order.created", {"no": "fields"}, event_id="unchecked")
        await endpoint.wait_for(24)
    assert [r.headers["webhook-id"] for r in endpoint.received[-2:]] == ["neg-ok", "unchecked"]


async def test_the_cli_sets_lists_shows_and_removes(
    env: dict[str, str], redis: Redis, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    example = tmp_path / "example.json"
    example.write_text(json.dumps({"order_id": 1, "total": -1}))
    done = cli(
        env, "event-types", "set", "order.created", "--description", "placed",
        "--schema", str(schema), "--example", str(example),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == ("notifier: error: example: breaks the schema: data.total: minimum 0\n")
    example.write_text(json.dumps({"order_id": 1, "total": 1}))
    done = cli(
        env, "event-types", "set", "order.created", "--description", "placed",
        "--schema", str(schema), "--example", str(example), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schema"] == SCHEMA
    listed = json.loads(cli(env, "event-types", "list").stdout)
    assert [e["type"] for e in listed] == ["order.created"]
    shown = json.loads(cli(env, "event-types", "show", "order.created").stdout)
    assert shown["example"] == {"order_id": 1, "total": 1}
    missing = cli(env, "event-types", "set", "a", "--description", "x", "--schema", "/nope")
    assert missing.returncode == 1 and missing.stderr.startswith(
        "notifier: error: --schema: cannot read /nope"
    )
    assert cli(env, "event-types", "remove", "order.created").returncode == 0

    async def gone() -> bool:
        return not await redis.hexists("notifier:event-types", "order.created")

    await eventually(gone, 5, "the entry to be removed")


async def test_publishers_are_refused_with_the_routers_schema_reason(
    env: dict[str, str], redis: Redis, http: Client
) -> None:
    """POST /v1/events and `notifier publish` tell the producer what the router would
    dead-letter the event for, and XADD nothing; a good event of the type, and any event of a
    type without a schema, goes in."""
    await http.put("/v1/event-types/order.created", json=ENTRY, headers=AUTH)
    bad = {"type": "order.created", "data": {"order_id": 2, "total": -5}}
    resp = await http.post("/v1/events", json=bad, headers=AUTH)
    assert resp.status == 400
    assert await resp.json() == {"error": "schema: data.total: minimum 0"}
    done = cli(env, "publish", "order.created", '{"order_id": 2}')
    assert done.returncode == 1
    assert done.stderr == "notifier: error: schema: data.total: required\n"
    assert await redis.xlen("notifier:events") == 0
    good = {"type": "order.created", "data": {"order_id": 2, "total": 5}}
    assert (await http.post("/v1/events", json=good, headers=AUTH)).status == 202
    assert cli(env, "publish", "order.paid", '{"total": -1}').returncode == 0
    # the catalog's change is followed by a Store that already checked once
    await http.delete("/v1/event-types/order.created", headers=AUTH)
    assert (await http.post("/v1/events", json=bad, headers=AUTH)).status == 202
    assert await redis.xlen("notifier:events") == 3
