"""Per-type transforms (`by_type`) and `require`: which transform an event gets, what check()
refuses, and that a required path missing from an event is a TransformError naming it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from notifier.models import Message, Partner
from notifier.transforms import Transform, TransformError, apply, check, select

EVENT: dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2026-11-24T12:00:00.000Z",
    "data": {"order_id": 42, "total": 99.5, "customer": {"email": "a@example.com"}},
}


def t(spec: dict[str, Any]) -> Transform:
    transform = msgspec.json.decode(msgspec.json.encode(spec), type=Transform)
    check(transform)
    return transform


BY_TYPE = t(
    {
        "by_type": {
            "order.created": {"pick": ["type", "data.order_id"]},
            "*": {"omit": ["data.customer"]},
        }
    }
)


def test_the_exact_type_first_then_star_then_none() -> None:
    assert apply(BY_TYPE, EVENT) == {"type": "order.created", "data": {"order_id": 42}}
    paid = {**EVENT, "type": "order.paid"}
    assert apply(BY_TYPE, paid) == {
        "type": "order.paid",
        "timestamp": EVENT["timestamp"],
        "data": {"order_id": 42, "total": 99.5},
    }
    only = t({"by_type": {"order.created": {"omit": ["data.total"]}}})
    assert select(only, "order.paid") is None
    assert apply(only, paid) == paid


def test_by_type_round_trips_through_json() -> None:
    text = msgspec.json.encode(BY_TYPE)
    assert msgspec.json.decode(text, type=Transform) == BY_TYPE
    assert b"require" not in text and b"pick" in text


def test_render_picks_the_transform_of_the_messages_type() -> None:
    from notifier.engine.sender import render

    partner = Partner(id="p", name="p", url="https://x", events=["*"], transform=BY_TYPE)
    data = msgspec.Raw(msgspec.json.encode(EVENT["data"]))
    created = Message(id="m", type="order.created", timestamp=EVENT["timestamp"], data=data)
    refund = Message(id="m", type="refund.issued", timestamp=EVENT["timestamp"], data=data)
    assert render(partner, created) == b'{"type":"order.created","data":{"order_id":42}}'
    assert b"customer" not in render(partner, refund)


def test_require_names_the_missing_path() -> None:
    needs = t({"require": ["data.order_id", "data.customer.phone"], "pick": ["data"]})
    with pytest.raises(TransformError) as caught:
        apply(needs, EVENT)
    assert str(caught.value) == "require: data.customer.phone is missing from the event"
    phone = {**EVENT, "data": {**EVENT["data"], "customer": {"phone": None}}}
    assert apply(needs, phone) == {"data": phone["data"]}  # null is there


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"by_type": {"order.created": {}}, "pick": ["type"]}, "by_type: stands alone"),
        ({"by_type": {"Order": {}}}, "by_type: event type 'Order' may only contain"),
        ({"by_type": {"a": {"by_type": {}}}}, "by_type.a: by_type does not nest"),
        ({"by_type": {"a": {"omit": ["x"]}}}, "by_type.a: omit: path 'x' does not start"),
        ({"require": ["data..x"]}, "require: path 'data..x' is not valid"),
        ({"require": ["total"]}, "require: path 'total' does not start with"),
    ],
)
def test_check_refuses_naming_the_part(spec: dict[str, Any], reason: str) -> None:
    transform = msgspec.json.decode(msgspec.json.encode(spec), type=Transform)
    with pytest.raises(TransformError) as caught:
        check(transform)
    assert str(caught.value).startswith(reason), str(caught.value)
