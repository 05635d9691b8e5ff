"""Content filters: what check() refuses, what each operator does, and, over arbitrary
filters and events, that the compiled filter agrees with a plain evaluator written here from
the README's words (docs/filters.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier.filters import FilterError, check, compile_filter, explain

EVENT: dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2026-11-24T12:00:00.000Z",
    "data": {
        "order": {"total": 120.5, "currency": "EUR", "country": "DE"},
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1, "gift": True}],
        "tags": ["vip", "new"],
        "note": None,
    },
}


def matches(spec: dict[str, Any], event: dict[str, Any] = EVENT) -> bool:
    return compile_filter(spec)(event)


# each operator, on the documented examples


def test_literals_are_equality_and_every_key_must_hold() -> None:
    assert matches({"type": "order.created"})
    assert matches({"type": "order.created", "data.order.country": "DE"})
    assert not matches({"type": "order.created", "data.order.country": "FR"})
    assert matches({"data.order": {"total": 120.5, "currency": "EUR", "country": "DE"}})
    assert not matches({"data.order": {"total": 120.5}})
    assert matches({"data.note": None})


def test_json_equality_numbers_by_value_booleans_apart() -> None:
    event = {"type": "t", "data": {"n": 1, "b": True}}
    assert matches({"data.n": 1.0}, event)
    assert not matches({"data.n": True}, event)
    assert not matches({"data.b": 1}, event)
    assert matches({"data.b": True}, event)


def test_ordered_comparisons_need_the_same_kind() -> None:
    assert matches({"data.order.total": {"$gt": 100}})
    assert not matches({"data.order.total": {"$gt": 120.5}})
    assert matches({"data.order.total": {"$gte": 120.5, "$lt": 200}})
    assert matches({"timestamp": {"$gte": "2026-11-24T00:00:00Z"}})
    assert not matches({"data.order.currency": {"$gt": 1}})  # a string is not a number
    assert not matches({"data.items[0].gift": {"$lte": 1}})  # missing


def test_in_nin_exists_contains() -> None:
    assert matches({"data.order.country": {"$in": ["DE", "AT"]}})
    assert not matches({"data.order.country": {"$nin": ["DE", "AT"]}})
    assert matches({"data.order.total": {"$exists": True}})
    assert matches({"data.note": {"$exists": True}})  # null is there
    assert matches({"data.refund": {"$exists": False}})
    assert matches({"data.tags": {"$contains": "vip"}})
    assert matches({"data.order.currency": {"$contains": "UR"}})
    assert not matches({"data.tags": {"$contains": "vi"}})  # an item, not a substring
    assert not matches({"data.order.total": {"$contains": 1}})


def test_a_path_through_any_item_matches_when_one_item_does() -> None:
    assert matches({"data.items[*].sku": "B-2"})
    assert not matches({"data.items[*].sku": "C-3"})
    assert matches({"data.items[*].qty": {"$gt": 1, "$lt": 3}})
    # all the operators of one object hold for the same item
    assert not matches({"data.items[*].qty": {"$gt": 1, "$exists": True, "$lt": 2}})
    assert matches({"data.items[*].gift": {"$exists": True}})
    assert matches({"data.items[1].gift": True})
    assert not matches({"data.items[0].gift": True})


def test_a_missing_path_matches_only_exists_false_ne_and_nin() -> None:
    for spec, expected in [
        ({"$exists": False}, True),
        ({"$ne": 1}, True),
        ({"$nin": [1]}, True),
        ({"$ne": 1, "$nin": [2]}, True),
        ({"$ne": 1, "$gt": 0}, False),
        ({"$exists": True}, False),
        ({"$eq": None}, False),
        ({"$in": [None]}, False),
        ({"$contains": "x"}, False),
        (None, False),
    ]:
        assert matches({"data.refund.amount": spec}) is expected, spec
        assert matches({"data.items[*].refund": spec}) is expected, spec
        assert matches({"data.tags[*].x": spec}) is expected, spec


def test_and_or_not() -> None:
    assert matches({"$or": [{"data.order.country": "FR"}, {"data.order.total": {"$gt": 100}}]})
    assert not matches({"$and": [{"type": "order.created"}, {"data.order.country": "FR"}]})
    assert matches({"$not": {"data.order.country": "FR"}})
    assert not matches({"$not": {"$or": [{"type": "order.created"}]}})
    assert matches({"type": "order.created", "$not": {"data.tags": {"$contains": "test"}}})


def test_explain_names_the_condition_that_does_not_hold() -> None:
    assert explain({"type": "order.created"}, EVENT) is None
    assert (
        explain({"type": "order.created", "data.order.total": {"$gt": 500}}, EVENT)
        == 'filter: data.order.total: {"$gt":500} does not hold'
    )


def _deep(n: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "a"}
    for _ in range(n):
        spec = {"$not": spec}
    return spec


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ([], "filter: must be an object of paths and conditions"),
        ({"total": 1}, "filter: path 'total' does not start with type, timestamp or data"),
        ({"data..x": 1}, "filter: path 'data..x' is not valid"),
        ({"data.x[a]": 1}, "filter: path 'data.x[a]' is not valid"),
        ({"": 1}, "filter: a path is empty"),
        ({"data." + "x" * 496: 1}, "is longer than 500 characters"),
        ({"data.x": {"$gt": [1]}}, "filter: data.x: $gt takes a number or a string"),
        ({"data.x": {"$in": 1}}, "filter: data.x: $in takes a list of values"),
        ({"data.x": {"$exists": 1}}, "filter: data.x: $exists takes true or false"),
        ({"data.x": {"$regex": "a"}}, "filter: data.x: '$regex' is not an operator"),
        ({"data.x": {"$gt": 1, "y": 2}}, "filter: data.x: mixes operators and plain keys"),
        ({"$and": []}, "filter: $and takes a non-empty list of objects"),
        ({"$or": [1]}, "filter.$or[0]: must be an object"),
        ({"$not": [{"type": "a"}]}, "filter.$not: must be an object"),
        ({"$where": "1"}, "filter: '$where' is not an operator here"),
        (_deep(20), "nests deeper than 16"),
        ({f"data.k{i}": i for i in range(201)}, "filter: at most 200 conditions in all"),
    ],
)
def test_check_refuses_naming_the_path_or_operator(spec: Any, reason: str) -> None:
    with pytest.raises(FilterError) as caught:
        check(spec)
    assert reason in str(caught.value)


# against a reference evaluator written from the documented words

OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains"]


def ref_split(path: str) -> list[str]:
    """`data.items[*].sku` -> ["data", "items", "*", "sku"]; `[0]` -> "0"."""
    steps: list[str] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        steps.append(name)
        for bracket in rest.split("[") if rest else []:
            steps.append(bracket.rstrip("]"))
    return steps


def ref_values(node: Any, steps: list[str]) -> list[Any]:
    """The values a path reaches: a path through [*] reaches every item's."""
    if not steps:
        return [node]
    step, rest = steps[0], steps[1:]
    if step == "*":
        if not isinstance(node, list):
            return []
        return [v for item in node for v in ref_values(item, rest)]
    if isinstance(node, dict):
        return ref_values(node[step], rest) if step in node else []
    if isinstance(node, list) and step.isdigit() and (step == "0" or step[0] != "0"):
        return ref_values(node[int(step)], rest) if int(step) < len(node) else []
    return []


def ref_equal(a: Any, b: Any) -> bool:
    """JSON values are equal: same kind (true and 1 differ), same numbers, same items."""
    kind = {bool: "bool", int: "number", float: "number", str: "string", list: "list"}
    if type(a) in (dict,) or type(b) in (dict,):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and set(a) == set(b)
            and all(ref_equal(a[k], b[k]) for k in a)
        )
    if a is None or b is None:
        return a is None and b is None
    if kind[type(a)] != kind[type(b)]:
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(ref_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def ref_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def ref_op(op: str, operand: Any, value: Any) -> bool:
    """One operator on a value that is there."""
    if op == "$eq":
        return ref_equal(value, operand)
    if op == "$ne":
        return not ref_equal(value, operand)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        same_kind = (ref_number(value) and ref_number(operand)) or (
            isinstance(value, str) and isinstance(operand, str)
        )
        if not same_kind:
            return False
        result: bool = {
            "$gt": value > operand,
            "$gte": value >= operand,
            "$lt": value < operand,
            "$lte": value <= operand,
        }[op]
        return result
    if op == "$in":
        return any(ref_equal(value, x) for x in operand)
    if op == "$nin":
        return not any(ref_equal(value, x) for x in operand)
    if op == "$exists":
        return bool(operand)
    # $contains: a substring of a string, or an item of a list
    if isinstance(value, str):
        return isinstance(operand, str) and operand in value
    if isinstance(value, list):
        return any(ref_equal(item, operand) for item in value)
    return False


def ref_match(spec: dict[str, Any], event: Any) -> bool:
    """All keys of one object must hold."""
    for key, cond in spec.items():
        if key == "$and":
            ok = all(ref_match(s, event) for s in cond)
        elif key == "$or":
            ok = any(ref_match(s, event) for s in cond)
        elif key == "$not":
            ok = not ref_match(cond, event)
        else:
            is_ops = isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond)
            ops = cond if is_ops else {"$eq": cond}
            found = ref_values(event, ref_split(key))
            if not found:
                # a missing path matches only {"$exists": false} and $ne / $nin
                ok = all(
                    op in ("$ne", "$nin") or (op == "$exists" and arg is False)
                    for op, arg in ops.items()
                )
            else:
                ok = any(all(ref_op(op, arg, v) for op, arg in ops.items()) for v in found)
        if not ok:
            return False
    return True


KEYS = ["a", "b", "0", "1"]
SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, 1.0, 2.5])
SCALARS = SCALARS | st.sampled_from(["", "a", "ab", "b", "1"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=10,
)
EVENTS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["order.created", "a"]),
        "timestamp": st.just("2026-11-24T12:00:00.000Z"),
        "data": st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4),
    }
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    root = draw(st.sampled_from(["type", "timestamp", "data", "data", "data"]))
    text = root
    for _ in range(draw(st.integers(0, 3) if root == "data" else st.just(0))):
        kind = draw(st.sampled_from(["key", "index", "any"]))
        if kind == "key":
            text += "." + draw(st.sampled_from(KEYS))
        elif kind == "index":
            text += f"[{draw(st.integers(0, 2))}]"
        else:
            text += "[*]"
    return text


@st.composite
def operand(draw: st.DrawFn, op: str) -> Any:
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return draw(st.integers(-3, 3) | st.sampled_from([1.5, "a", "b", "2026"]))
    if op in ("$in", "$nin"):
        return draw(st.lists(VALUES, max_size=3))
    if op == "$exists":
        return draw(st.booleans())
    return draw(VALUES)


@st.composite
def conditions(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        value = draw(VALUES)
        if isinstance(value, dict) and value:
            return value  # a literal object: its keys never start with $
        return value
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=3, unique=True))
    return {op: draw(operand(op)) for op in ops}


FILTERS = st.recursive(
    st.dictionaries(paths(), conditions(), min_size=1, max_size=3),
    lambda inner: (
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda x: {"$not": x}, inner)
        | st.builds(lambda a, b: {**a, **b}, inner, inner)
    ),
    max_leaves=6,
)


@given(FILTERS, EVENTS)
@hsettings(max_examples=800, deadline=None, derandomize=True)
def test_the_compiled_filter_agrees_with_the_reference(spec: Any, event: Any) -> None:
    check(spec)
    assert compile_filter(spec)(event) is ref_match(spec, event)


@given(FILTERS, EVENTS)
@hsettings(max_examples=300, deadline=None, derandomize=True)
def test_not_is_the_negation_and_or_of_one_is_itself(spec: Any, event: Any) -> None:
    one = compile_filter(spec)(event)
    assert compile_filter({"$not": spec})(event) is not one
    assert compile_filter({"$or": [spec]})(event) is one
    assert compile_filter({"$and": [spec, spec]})(event) is one
