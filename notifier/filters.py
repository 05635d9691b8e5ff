"""Content filters: a partner receives only the events whose content matches its `filter`.

A filter is a JSON object. Each key is a path into the event `{"type", "timestamp", "data"}`
(`type`, `data.order.total`, `data.items[*].sku`, `data.items[0].sku`) and its value is either a
literal, which the value at the path must equal, or an object of operators:

    $eq, $ne              equal, not equal
    $gt, $gte, $lt, $lte  ordered: both numbers, or both strings (ISO times compare as text)
    $in, $nin             equal to one of a list, to none of it
    $exists               true: the path is there (null counts); false: it is not
    $contains             a substring of a string, or an item of a list

All keys of one object must hold. `$and` and `$or` take a list of such objects, `$not` one. A
path through `[*]` matches when any item matches (all the operators of one object then hold
for the same item). A path that is missing (or a `[*]` with no item to reach) matches only
`{"$exists": false}`, `$ne` and `$nin`. Equality is JSON's: `1` equals `1.0`, `true` is not
`1`, objects are equal when their keys and values are.

A filter is checked when the partner is saved (`check`: FilterError naming the path or the
operator and why) and compiled once per change into nested closures (`compile_filter`), which
the router calls once per event and subscribed partner: no parsing on the hot path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from notifier.transforms import MAX_PATH_LENGTH, ROOTS, list_index

MAX_CONDITIONS = 200
MAX_DEPTH = 16
MAX_LIST = 1000

_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[(?:[0-9]+|\*)\])*")
_STEP = re.compile(r"\.?([^.\[\]]+)|\[([0-9]+|\*)\]")

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains")
LOGICAL = ("$and", "$or", "$not")

Event = dict[str, Any]
Match = Callable[[Event], bool]
#: One step of a path: a key, a list index, or `[*]` (None).
Step = str | int | None


class FilterError(ValueError):
    """A filter that cannot be saved; the message names the path or operator and why."""


def check(spec: Any) -> None:
    """Raise FilterError naming the first problem, so a bad filter is refused on save."""
    compile_filter(spec)


def compile_filter(spec: Any) -> Match:
    """The filter as one function of a decoded event; raises FilterError when it is bad."""
    return _object(spec, "filter", 0, [MAX_CONDITIONS])


def _object(spec: Any, where: str, depth: int, budget: list[int]) -> Match:
    if not isinstance(spec, dict):
        raise FilterError(f"{where}: must be an object of paths and conditions")
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: nests deeper than {MAX_DEPTH}")
    parts = [_key(key, value, where, depth, budget) for key, value in spec.items()]
    if len(parts) == 1:
        return parts[0]
    return lambda event: all(part(event) for part in parts)


def _key(key: str, value: Any, where: str, depth: int, budget: list[int]) -> Match:
    budget[0] -= 1
    if budget[0] < 0:
        raise FilterError(f"filter: at most {MAX_CONDITIONS} conditions in all")
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"{where}: {key} takes a non-empty list of objects")
        if len(value) > MAX_LIST:
            raise FilterError(f"{where}: {key} takes at most {MAX_LIST} objects")
        parts = [_object(v, f"{where}.{key}[{i}]", depth + 1, budget) for i, v in enumerate(value)]
        if key == "$and":
            return lambda event: all(part(event) for part in parts)
        return lambda event: any(part(event) for part in parts)
    if key == "$not":
        inner = _object(value, f"{where}.$not", depth + 1, budget)
        return lambda event: not inner(event)
    if key.startswith("$"):
        raise FilterError(
            f"{where}: {key!r} is not an operator here: use a path like data.total, "
            "or $and, $or, $not"
        )
    path = parse_path(key)
    return _condition(path, key, value)


def parse_path(text: str) -> tuple[Step, ...]:
    """`data.items[*].sku` -> ("data", "items", None, "sku"); FilterError when it is bad."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    if not text:
        raise FilterError("filter: a path is empty")
    if len(text) > MAX_PATH_LENGTH:
        raise FilterError(f"filter: path {shown!r} is longer than {MAX_PATH_LENGTH} characters")
    if not _PATH.fullmatch(text):
        raise FilterError(
            f"filter: path {shown!r} is not valid (write names separated by dots, list "
            "items as [0], any item as [*])"
        )
    steps: list[Step] = []
    for key, index in _STEP.findall(text):
        if key:
            steps.append(key)
        else:
            steps.append(None if index == "*" else int(index))
    if steps[0] not in ROOTS:
        raise FilterError(f"filter: path {shown!r} does not start with type, timestamp or data")
    return tuple(steps)


def _condition(path: tuple[Step, ...], key: str, value: Any) -> Match:
    shown = key if len(key) <= 60 else key[:57] + "..."
    if isinstance(value, dict) and value and all(str(k).startswith("$") for k in value):
        test, missing = _operators(value, shown)
    elif isinstance(value, dict) and any(str(k).startswith("$") for k in value):
        raise FilterError(
            f"filter: {shown}: mixes operators and plain keys; write either operators "
            '({"$gt": 1}) or the literal object to compare with'
        )
    else:
        test, missing = _equal(value), False
    if None not in path:
        get = _getter(path)

        def one(event: Event) -> bool:
            found = get(event)
            return missing if found is _MISSING else test(found)

        return one

    def matches(event: Event) -> bool:
        found = False
        for item in values(event, path):
            if test(item):
                return True
            found = True
        return False if found else missing

    return matches


class _Missing:
    """No value at a path: `null` is a value an event may hold."""


_MISSING: Any = _Missing()


def _getter(path: tuple[Step, ...]) -> Callable[[Any], Any]:
    """The value at a path without `[*]`, or _MISSING: the hot path of most filters, so plain
    dictionary lookups with no generator in between."""
    if all(isinstance(step, str) and _list_index(step) is None for step in path):
        keys = [str(step) for step in path]

        def walk(node: Any) -> Any:
            for key in keys:
                if node.__class__ is not dict:
                    return _MISSING
                node = node.get(key, _MISSING)
                if node is _MISSING:
                    return _MISSING
            return node

        return walk

    def through(node: Any) -> Any:
        for found in values(node, path):
            return found
        return _MISSING

    return through


def _equal(literal: Any) -> Callable[[Any], bool]:
    """Equality with one literal, specialised for its kind (the common filter is a string)."""
    if literal.__class__ is str:
        return lambda found: found.__class__ is str and found == literal
    if literal is None or literal.__class__ is bool:
        return lambda found: found is literal
    return lambda found: same(found, literal)


def _operators(spec: dict[str, Any], where: str) -> tuple[Callable[[Any], bool], bool]:
    """One test of a present value for all the operators of `spec`, and what a missing path
    gives."""
    tests: list[Callable[[Any], bool]] = []
    for op, operand in spec.items():
        if op not in OPERATORS:
            raise FilterError(
                f"filter: {where}: {op!r} is not an operator (use one of {', '.join(OPERATORS)})"
            )
        tests.append(_operator(op, operand, where))
    missing = all(
        op in ("$ne", "$nin") or (op == "$exists" and operand is False)
        for op, operand in spec.items()
    )
    if len(tests) == 1:
        return tests[0], missing
    return (lambda found: all(test(found) for test in tests)), missing


def _operator(op: str, operand: Any, where: str) -> Callable[[Any], bool]:
    if op == "$eq":
        return _equal(operand)
    if op == "$ne":
        equal = _equal(operand)
        return lambda found: not equal(found)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not (_is_number(operand) or isinstance(operand, str)):
            raise FilterError(f"filter: {where}: {op} takes a number or a string")
        return _ordered(op, operand)
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(f"filter: {where}: {op} takes a list of values")
        if len(operand) > MAX_LIST:
            raise FilterError(f"filter: {where}: {op} takes at most {MAX_LIST} values")
        choices = list(operand)
        if all(c.__class__ is str for c in choices):
            # strings are equal only to strings: a set answers for all of them at once
            texts = frozenset(choices)
            if op == "$in":
                return lambda found: found.__class__ is str and found in texts
            return lambda found: not (found.__class__ is str and found in texts)
        if op == "$in":
            return lambda found: any(same(found, c) for c in choices)
        return lambda found: not any(same(found, c) for c in choices)
    if op == "$exists":
        if not isinstance(operand, bool):
            raise FilterError(f"filter: {where}: $exists takes true or false")
        return lambda found: operand
    # $contains
    return lambda found: _contains(found, operand)


def _ordered(op: str, bound: Any) -> Callable[[Any], bool]:
    number = _is_number(bound)

    def comparable(found: Any) -> bool:
        return _is_number(found) if number else isinstance(found, str)

    if op == "$gt":
        return lambda found: comparable(found) and found > bound
    if op == "$gte":
        return lambda found: comparable(found) and found >= bound
    if op == "$lt":
        return lambda found: comparable(found) and found < bound
    return lambda found: comparable(found) and found <= bound


def _contains(found: Any, operand: Any) -> bool:
    if isinstance(found, str):
        return isinstance(operand, str) and operand in found
    if isinstance(found, list):
        return any(same(item, operand) for item in found)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value whatever their form, booleans only with booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same(value, b[key]) for key, value in a.items())
        )
    return type(a) is type(b) and a == b


def values(node: Any, path: tuple[Step, ...]) -> Iterator[Any]:
    """Every value the path reaches: one at most, more through `[*]`."""
    for n, step in enumerate(path):
        if step is None:
            if isinstance(node, list):
                rest = path[n + 1 :]
                for item in node:
                    yield from values(item, rest)
            return
        if isinstance(node, dict):
            key = str(step)
            if key not in node:
                return
            node = node[key]
        elif isinstance(node, list) and _list_index(step) is not None:
            i = _list_index(step)
            assert i is not None
            if i >= len(node):
                return
            node = node[i]
        else:
            return
    yield node


def _list_index(step: Step) -> int | None:
    """A step that selects a list item: `[0]`, or `.0` as transforms read it (`007` does not)."""
    if isinstance(step, int):
        return step
    return list_index(step) if isinstance(step, str) else None


def explain(spec: Any, event: Event) -> str | None:
    """Why a checked filter does not match `event`: its first top-level condition that does
    not hold, in words for a preview; None when it matches."""
    if compile_filter(spec)(event):
        return None
    for key, value in spec.items():
        if not compile_filter({key: value})(event):
            shown = _shown(value)
            if key in LOGICAL:
                return f"filter: {key} {shown} does not hold"
            return f"filter: {key}: {shown} does not hold"
    return "filter: the event does not match"


def _shown(value: Any) -> str:
    import msgspec

    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."
