"""Transforms: each step, their order, what check() refuses, properties over arbitrary events, and
what a partner with a transform receives."""

from __future__ import annotations

from typing import Any

import aiohttp
import aiohttp.test_utils
import msgspec
import standardwebhooks
from hypothesis import strategies as st
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.transforms import ROOTS, Transform, check
from tests.helpers import EndpointFactory, idle, publish, register, running

EVENT: dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2026-11-24T12:00:00.000Z",
    "data": {
        "order_id": 42,
        "total": 99.5,
        "customer": {"email": "a@example.com", "name": "Ann"},
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}, {"sku": "C-3", "qty": 5}],
        "tags": {"0": "zero", "007": "bond"},
    },
}


def t(**steps: Any) -> Transform:
    """A checked transform, decoded from JSON as the API decodes it."""
    transform = msgspec.json.decode(msgspec.json.encode(steps), type=Transform)
    check(transform)
    return transform


# the JSON form


# pick


# omit


# rename


# map


# order and input


# check


# properties

KEYS = st.sampled_from(["a", "b", "0", "1", "2", "007", "items", "x.y", ""])
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6)
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
STEPS = st.sampled_from(["a", "b", "0", "1", "2", "007", "items"])


@st.composite
def paths(draw: st.DrawFn, roots: tuple[str, ...] = ROOTS) -> str:
    text = draw(st.sampled_from(roots))
    for step in draw(st.lists(STEPS, max_size=4)):
        text += f"[{step}]" if step.isdigit() and draw(st.booleans()) else f".{step}"
    return text


LEAVES = (
    SCALARS.filter(lambda v: not (isinstance(v, str) and v.startswith("$")))
    | paths().map(lambda p: "$." + p)
    | st.just("$")
    | st.text(max_size=4).map(lambda s: "$$" + s)
)
TEMPLATES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=15,
)


# Mostly near-misses of valid paths, with some valid ones so that the second half runs too.


# through the service


async def test_partner_receives_its_transformed_body(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    plain, mapped = await endpoint_factory(), await endpoint_factory()
    await register(redis, settings, "plain", plain.url, ["*"])
    await register(
        redis,
        settings,
        "mapped",
        mapped.url,
        ["*"],
        transform={
            "omit": ["data.customer.email"],
            "map": {"event": "$.type", "order": "$.data.order_id", "who": "$.data.customer"},
        },
    )
    async with running(settings):
        await publish(redis, "order.created", EVENT["data"])
        await plain.wait_for(1)
        await mapped.wait_for(1)
    assert plain.bodies()[0]["data"] == EVENT["data"]
    assert mapped.bodies()[0] == {"event": "order.created", "order": 42, "who": {"name": "Ann"}}


async def test_the_transformed_body_is_what_is_signed(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    mapped = await endpoint_factory()
    _, secret = await register(
        redis,
        settings,
        "mapped",
        mapped.url,
        ["*"],
        transform={
            "pick": ["type", "data.order_id", "data.customer", "data.items[1]"],
            "omit": ["data.customer.email"],
            "rename": {"data.order_id": "data.id"},
            "map": {
                "event": "$.type",
                "order": "$.data.id",
                "who": "$.data.customer.name",
                "second": "$.data.items.0.sku",
                "source": "shop",
            },
        },
    )
    async with running(settings):
        await publish(redis, "order.created", EVENT["data"])
        await mapped.wait_for(1)
    got = mapped.received[0]
    # Verified as a partner verifies it: a signature over anything but the bytes received
    # (the standard shape, say) fails here.
    payload = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert payload == {
        "event": "order.created",
        "order": 42,
        "who": "Ann",
        "second": "B-2",
        "source": "shop",
    }
    assert payload == mapped.bodies()[0]


async def test_bad_transform_is_a_400_on_save(redis: Redis, settings: Settings) -> None:
    from notifier.admin import app as api
    from tests.helpers import TOKEN

    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        resp = await client.post(
            "/v1/partners",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "name": "x",
                "url": "https://x.example.com",
                "events": ["*"],
                "transform": {"omit": ["data..x"]},
            },
        )
        assert resp.status == 400
        assert (
            (await resp.json())["error"] == "transform: omit: path 'data..x' is not valid "
            "(write names separated by dots, and list "
            "items as .0 or [0])"
        )


async def test_a_transform_that_fails_dead_letters_that_message_and_delivery_goes_on(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    """A required path missing from one event: that message is dead-lettered for that partner
    at once (no request, no retry) with the reason, and the partner's next messages and the
    other partners' go on."""
    from notifier.dead_letters import DeadLetters

    plain, picky = await endpoint_factory(), await endpoint_factory()
    await register(redis, settings, "plain", plain.url, ["*"])
    picky_id, _ = await register(
        redis,
        settings,
        "picky",
        picky.url,
        ["*"],
        transform={
            "by_type": {
                "order.created": {"require": ["data.customer.email"], "pick": ["data"]},
                "*": {"map": {"kind": "$.type"}},
            }
        },
    )
    async with running(settings):
        await publish(redis, "order.created", {"order_id": 1}, event_id="no-email")
        await publish(redis, "order.created", EVENT["data"], event_id="with-email")
        await publish(redis, "order.paid", {"order_id": 1}, event_id="paid")
        await plain.wait_for(3)
        await picky.wait_for(2)
        await idle(redis)
    assert sorted(r.headers["webhook-id"] for r in picky.received) == ["paid", "with-email"]
    assert {r.headers["webhook-id"]: r.body for r in picky.received}["paid"] == (
        b'{"kind":"order.paid"}'
    )
    letters = (await DeadLetters(redis, settings).page(picky_id)).data
    assert len(letters) == 1
    assert letters[0].message is not None and letters[0].message.id == "no-email"
    assert letters[0].reason == (
        "transform: require: data.customer.email is missing from the event"
    )
    assert [a.attempt for a in letters[0].attempts] == [1]
    assert letters[0].attempts[0].status is None
