"""Transforms: each step, their order, what check() refuses, properties over arbitrary events, and
what a partner with a transform receives."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier.transforms import ROOTS, Transform, TransformError, apply, check

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


def run(**steps: Any) -> Any:
    before = copy.deepcopy(EVENT)
    out = apply(t(**steps), EVENT)
    assert before == EVENT, "apply mutated its input"
    return out


# the JSON form


def test_the_json_form_round_trips_and_empty_is_the_identity() -> None:
    raw = (
        b'{"pick":["type","data"],"omit":["data.total"],"rename":{"type":"event"},'
        b'"map":{"e":"$.event"}}'
    )
    assert msgspec.json.encode(msgspec.json.decode(raw, type=Transform)) == raw
    assert msgspec.json.encode(Transform()) == b"{}"
    assert run() == EVENT


def test_unknown_steps_and_wrong_types_are_refused_by_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match="uppercase"):
        msgspec.json.decode(b'{"uppercase": ["type"]}', type=Transform)
    with pytest.raises(msgspec.ValidationError, match="omit"):
        msgspec.json.decode(b'{"omit": "data.total"}', type=Transform)
    with pytest.raises(msgspec.ValidationError, match="map"):
        msgspec.json.decode(b'{"map": ["$.type"]}', type=Transform)


# pick


def test_pick_keeps_only_its_paths_in_the_events_order() -> None:
    out = run(pick=["data.customer.name", "data.order_id", "type", "data.nope", "data.total.x"])
    assert out == {"type": "order.created", "data": {"order_id": 42, "customer": {"name": "Ann"}}}
    assert list(out) == ["type", "data"]


def test_pick_list_items_close_up() -> None:
    out = run(pick=["data.items[2].sku", "data.items.0", "data.items.9"])
    assert out == {"data": {"items": [{"sku": "A-1", "qty": 2}, {"sku": "C-3"}]}}


def test_pick_of_a_whole_value_covers_picks_inside_it() -> None:
    assert run(pick=["data.customer.name", "data.customer"]) == run(pick=["data.customer"])
    assert run(pick=["data.customer"])["data"]["customer"] == EVENT["data"]["customer"]


def test_pick_of_nothing_present_is_an_empty_body() -> None:
    assert run(pick=["data.nope"]) == {}


# omit


def test_omit_removes_nested_values_and_skips_missing_ones() -> None:
    out = run(omit=["data.customer.email", "data.total", "data.nope.deeper", "type.x"])
    assert out["data"]["customer"] == {"name": "Ann"}
    assert "total" not in out["data"]
    assert out["type"] == "order.created"


def test_omit_list_items_all_count_from_the_input() -> None:
    out = run(omit=["data.items.0", "data.items[1]", "data.items.2.qty", "data.items.7"])
    assert out["data"]["items"] == [{"sku": "C-3"}]


def test_number_steps_are_object_keys_on_objects() -> None:
    assert run(omit=["data.tags.0"])["data"]["tags"] == {"007": "bond"}
    assert run(map={"k": "$.data.tags.007", "i": "$.data.items.007"}) == {"k": "bond", "i": None}


# rename


def test_rename_moves_values_and_creates_objects_on_the_way() -> None:
    out = run(
        rename={
            "data.total": "data.amount",
            "type": "event",
            "data.customer.email": "contact.email",
        }
    )
    assert out["event"] == "order.created" and "type" not in out
    assert out["data"]["amount"] == 99.5 and "total" not in out["data"]
    assert out["contact"] == {"email": "a@example.com"}
    assert out["data"]["customer"] == {"name": "Ann"}


def test_rename_into_a_list_item_and_over_an_existing_value() -> None:
    out = run(rename={"data.total": "data.items.0.price", "data.order_id": "data.customer"})
    assert out["data"]["items"][0] == {"sku": "A-1", "qty": 2, "price": 99.5}
    assert out["data"]["customer"] == 42


def test_rename_that_cannot_be_placed_leaves_the_value_where_it_was() -> None:
    out = run(
        rename={
            "data.total": "type.total",
            "data.order_id": "data.items.3.id",
            "data.customer": "data.items.x",
        }
    )
    assert out == EVENT


def test_rename_of_a_missing_path_does_nothing() -> None:
    assert run(rename={"data.nope": "data.other", "data.items.5": "data.last"}) == EVENT


def test_renames_run_in_the_order_written() -> None:
    assert run(rename={"data.total": "data.a", "data.a": "data.b"})["data"]["b"] == 99.5
    out = run(rename={"data.a": "data.b", "data.total": "data.a"})
    assert out["data"]["a"] == 99.5 and "b" not in out["data"]


# map


def test_map_builds_a_new_structure_from_paths() -> None:
    out = run(
        map={
            "event": "$.type",
            "at": "$.timestamp",
            "order": {
                "id": "$.data.order_id",
                "email": "$.data.customer.email",
                "skus": ["$.data.items[0].sku", "$.data.items.1.sku", {"third": "$.data.items[2]"}],
            },
            "missing": "$.data.nope",
            "past_end": "$.data.items.3.sku",
        }
    )
    assert out == {
        "event": "order.created",
        "at": "2026-11-24T12:00:00.000Z",
        "order": {
            "id": 42,
            "email": "a@example.com",
            "skus": ["A-1", "B-2", {"third": {"sku": "C-3", "qty": 5}}],
        },
        "missing": None,
        "past_end": None,
    }


def test_map_keeps_literals_and_unescapes_double_dollar() -> None:
    out = run(
        map={
            "source": "shop",
            "n": 3,
            "f": 1.5,
            "ok": True,
            "none": None,
            "list": [],
            "price": "$$9.99",
            "path": "$$.type",
            "dollars": "$$$",
            "$.type": "key",
        }
    )
    assert out == {
        "source": "shop",
        "n": 3,
        "f": 1.5,
        "ok": True,
        "none": None,
        "list": [],
        "price": "$9.99",
        "path": "$.type",
        "dollars": "$$",
        "$.type": "key",
    }


def test_map_dollar_alone_is_the_whole_body() -> None:
    assert run(map={"kind": "webhook", "event": "$"}) == {"kind": "webhook", "event": EVENT}


# order and input


def test_steps_run_pick_omit_rename_then_map() -> None:
    out = run(
        pick=["type", "data.total", "data.customer"],
        omit=["data.customer.email"],
        rename={"data.total": "data.amount", "type": "kind"},
        map={
            "kind": "$.kind",
            "amount": "$.data.amount",
            "who": "$.data.customer",
            "total": "$.data.total",
            "email": "$.data.customer.email",
        },
    )
    assert out == {
        "kind": "order.created",
        "amount": 99.5,
        "who": {"name": "Ann"},
        "total": None,
        "email": None,
    }


def test_the_input_is_never_mutated_even_when_the_result_is() -> None:
    event = copy.deepcopy(EVENT)
    for steps in (
        {"omit": ["data.customer.email", "data.items.0.qty"]},
        {"rename": {"data.items.1.sku": "data.items.0.sku", "data.total": "x.y"}},
        {"pick": ["data.customer", "data.items.2"]},
    ):
        out = apply(t(**steps), event)
        msgspec.json.encode(out)
        assert event == EVENT


# check


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"omit": ["data..x"]}', "omit: path 'data..x' is not valid"),
        (b'{"pick": ["data."]}', "pick: path 'data.' is not valid"),
        (b'{"pick": [".data"]}', "pick: path '.data' is not valid"),
        (b'{"pick": ["data[x]"]}', "pick: path 'data[x]' is not valid"),
        (b'{"pick": ["data.items[0]x"]}', "is not valid"),
        (b'{"pick": ["data.items[-1]"]}', "is not valid"),
        (b'{"pick": ["data.items[]"]}', "is not valid"),
        (b'{"pick": []}', "pick: needs at least one path"),
        (b'{"pick": ["Data.order_id"]}', "pick: path 'Data.order_id' does not start with type"),
        (b'{"omit": ["order_id"]}', "omit: path 'order_id' does not start with type"),
        (b'{"rename": {"data.a": ""}}', "rename: path '' is empty"),
        (b'{"rename": {"dta.a": "data.b"}}', "rename: path 'dta.a' does not start"),
        (b'{"rename": {"data.a": "b..c"}}', "rename: path 'b..c' is not valid"),
        (b'{"map": {"x": "$.data..y"}}', "map.x: path '$.data..y' is not valid"),
        (b'{"map": {"x": {"y": ["$.", 1]}}}', "map.x.y[0]: path '$.' is empty"),
        (b'{"map": {"x": "$data.y"}}', "map.x: '$data.y' is neither a path"),
        (b'{"map": {"x": "$5"}}', "write '$$5' for the literal text"),
        (b'{"map": {"x": "$.event"}}', "map.x: path '$.event' does not start with type"),
        (b'{"pick": ["data.' + b"x" * 500 + b'"]}', "is longer than 500 characters"),
        (b'{"omit": [' + b",".join([b'"data.x"'] * 201) + b"]}", "at most 200 paths"),
        (b'{"map": {"x": ' + b"[" * 40 + b"]" * 40 + b"}}", "nests deeper than 32"),
        (b'{"map": {"x": [' + b",".join([b"1"] * 1001) + b"]}}", "at most 1000 values"),
    ],
)
def test_check_refuses_bad_transforms_naming_the_part(body: bytes, reason: str) -> None:
    transform = msgspec.json.decode(body, type=Transform)
    with pytest.raises(TransformError) as caught:
        check(transform)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"omit": []}',
        b'{"rename": {}}',
        b'{"map": {}}',
        b'{"pick": ["type", "timestamp", "data.items[0][1].x", "data.a b.c-d", "data.0.007"]}',
        b'{"rename": {"type": "event"}, "map": {"e": "$.event.x", "all": "$", "lit": "$$x"}}',
        b'{"map": {"x": ["$$", "$", "plain", null, 1, {"y": "$.data.items[3]"}]}}',
    ],
)
def test_check_accepts_good_transforms(body: bytes) -> None:
    check(msgspec.json.decode(body, type=Transform))


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
DATA = st.dictionaries(KEYS, JSONISH, max_size=5)
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
TRANSFORMS = st.builds(
    Transform,
    pick=st.none() | st.lists(paths(), min_size=1, max_size=4),
    omit=st.lists(paths(), max_size=4),
    rename=st.dictionaries(paths(), paths((*ROOTS, "event", "x")), max_size=3),
    map=st.none() | st.dictionaries(st.text(max_size=4), TEMPLATES, max_size=4),
)


@hsettings(max_examples=500)
@given(DATA, TRANSFORMS)
def test_checked_transforms_never_fail_at_delivery(
    data: dict[str, Any], transform: Transform
) -> None:
    check(transform)
    event = {"type": "order.created", "timestamp": "2026-11-24T12:00:00.000Z", "data": data}
    before = copy.deepcopy(event)
    out = apply(transform, event)
    msgspec.json.decode(msgspec.json.encode(out))
    assert event == before
    if transform.map is not None:
        assert isinstance(out, dict) and list(out) == list(transform.map)


# Mostly near-misses of valid paths, with some valid ones so that the second half runs too.
ANY_TEXT = st.text(alphabet="data.[]0$ xe", max_size=12) | paths() | paths().map(lambda p: "$." + p)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "pick": st.lists(ANY_TEXT, max_size=3),
            "omit": st.lists(ANY_TEXT, max_size=3),
            "rename": st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=3),
            "map": st.dictionaries(
                ANY_TEXT,
                st.recursive(
                    ANY_TEXT | SCALARS,
                    lambda inner: (
                        st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3)
                    ),
                    max_leaves=8,
                ),
                max_size=3,
            ),
        },
    ),
    DATA,
)
def test_check_refuses_only_with_a_reason_and_what_it_accepts_applies(
    steps: dict[str, Any], data: dict[str, Any]
) -> None:
    transform = msgspec.json.decode(msgspec.json.encode(steps), type=Transform)
    try:
        check(transform)
    except TransformError as exc:
        assert str(exc)
        return
    event = {"type": "x", "timestamp": "t", "data": data}
    msgspec.json.encode(apply(transform, event))


# through the service
