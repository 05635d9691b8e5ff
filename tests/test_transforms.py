"""Transforms: unit tests of each step, and what a partner with a transform receives."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import aiohttp.test_utils
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.transforms import Transform, TransformError, apply, check, parse_path
from tests.conftest import publish, register, running

EVENT: dict[str, Any] = {
    "type": "order.created", "timestamp": "2026-11-24T12:00:00.000Z",
    "data": {"order_id": 42, "total": 99.5,
             "customer": {"email": "a@example.com", "name": "Ann"},
             "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]}}


def t(**kwargs: Any) -> Transform:
    transform = msgspec.convert(kwargs, Transform)
    check(transform)
    return transform


def test_paths() -> None:
    assert parse_path("data.items[0].sku") == ("data", "items", 0, "sku")
    assert parse_path("data.items.1") == ("data", "items", 1)
    for bad in ("", "data..x", ".data", "data.", "data[x]"):
        with pytest.raises(TransformError):
            parse_path(bad)


def test_omit() -> None:
    out = apply(t(omit=["data.customer.email", "data.items.0", "data.nope"]), EVENT)
    assert out["data"]["customer"] == {"name": "Ann"}
    assert out["data"]["items"] == [{"sku": "B-2", "qty": 1}]


def test_pick() -> None:
    out = apply(t(pick=["type", "data.order_id", "data.customer.name", "data.nope"]), EVENT)
    assert out == {"type": "order.created",
                   "data": {"order_id": 42, "customer": {"name": "Ann"}}}


def test_rename() -> None:
    out = apply(t(rename={"data.total": "data.amount", "type": "event"}), EVENT)
    assert out["event"] == "order.created" and "type" not in out
    assert out["data"]["amount"] == 99.5 and "total" not in out["data"]


def test_map_builds_a_new_shape() -> None:
    out = apply(t(map={"event": "$.type", "order": {"id": "$.data.order_id",
                                                     "first": "$.data.items[0].sku",
                                                     "skus": ["$.data.items.0.sku",
                                                              "$.data.items.1.sku"]},
                       "missing": "$.data.nope", "source": "shop", "price": "$$5", "n": 3}),
                EVENT)
    assert out == {"event": "order.created",
                   "order": {"id": 42, "first": "A-1", "skus": ["A-1", "B-2"]},
                   "missing": None, "source": "shop", "price": "$5", "n": 3}


def test_steps_run_in_order_and_input_is_untouched() -> None:
    before = copy.deepcopy(EVENT)
    out = apply(t(pick=["type", "data.total", "data.customer"], omit=["data.customer.email"],
                  rename={"data.total": "data.amount"},
                  map={"kind": "$.type", "amount": "$.data.amount",
                       "who": "$.data.customer"}), EVENT)
    assert out == {"kind": "order.created", "amount": 99.5, "who": {"name": "Ann"}}
    assert before == EVENT


@pytest.mark.parametrize("body", [
    b'{"omit": ["data..x"]}', b'{"rename": {"data.a": ""}}', b'{"map": {"x": "$.data..y"}}'])
def test_bad_transforms_are_refused(body: bytes) -> None:
    with pytest.raises(TransformError):
        check(msgspec.json.decode(body, type=Transform))


def test_unknown_steps_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="uppercase"):
        msgspec.json.decode(b'{"uppercase": ["type"]}', type=Transform)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "b", "0", "items"]), inner, max_size=3), max_leaves=10)
PATHS = st.lists(st.sampled_from(["a", "b", "0", "1", "items"]), min_size=1, max_size=3).map(
    lambda parts: ".".join(["data", *parts]))


@given(JSONISH, st.lists(PATHS, max_size=3), st.lists(PATHS, max_size=3),
       st.dictionaries(PATHS, PATHS, max_size=2), st.booleans())
def test_checked_transforms_never_fail_at_delivery(data: Any, pick: list[str], omit: list[str],
                                                  rename: dict[str, str], use_map: bool) -> None:
    event = {"type": "x", "timestamp": "t", "data": data if isinstance(data, dict) else {}}
    transform = t(pick=pick or None, omit=omit, rename=rename,
                  map={"p": f"$.{pick[0]}" if pick else "$.type"} if use_map else None)
    msgspec.json.encode(apply(transform, event))


async def test_partner_receives_its_transformed_body(redis: Redis, settings: Settings,
                                                     endpoint_factory) -> None:
    plain, mapped = await endpoint_factory(), await endpoint_factory()
    await register(redis, settings, "plain", plain.url, ["*"])
    await register(redis, settings, "mapped", mapped.url, ["*"], transform={
        "omit": ["data.customer.email"],
        "map": {"event": "$.type", "order": "$.data.order_id", "who": "$.data.customer"}})
    async with running(settings):
        await publish(redis, "order.created", EVENT["data"])
        await plain.wait_for(1)
        await mapped.wait_for(1)
    assert plain.bodies()[0]["data"] == EVENT["data"]
    assert mapped.bodies()[0] == {"event": "order.created", "order": 42,
                                  "who": {"name": "Ann"}}


async def test_bad_transform_is_a_400_on_save(redis: Redis, settings: Settings) -> None:
    from notifier import api
    from tests.conftest import TOKEN

    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        resp = await client.post("/v1/partners", headers={"Authorization": f"Bearer {TOKEN}"},
                                 json={"name": "x", "url": "https://x.example.com",
                                       "events": ["*"], "transform": {"omit": ["data..x"]}})
        assert resp.status == 400
        assert "transform" in (await resp.json())["error"]
