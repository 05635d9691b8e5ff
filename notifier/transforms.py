"""Per-partner transforms: reshape the body a partner receives.

A transform is a JSON object with up to five steps. Every step is optional; `{}` sends the event
unchanged. The steps always run in this order, each on the result of the one before:

0. `require`: a list of paths the event must have; an event without one of them is not sent
   to the partner but dead-lettered for it, with the path in the reason.
1. `pick`: a list of paths; only the values at those paths are kept.
2. `omit`: a list of paths; the values at those paths are removed.
3. `rename`: an object of `"from": "to"` paths; each value is moved, in the order written.
4. `map`: a template; the whole body becomes this structure (it reads the result of steps 1-3).

A path is dotted into the event `{"type": ..., "timestamp": ..., "data": {...}}` and starts with
`type`, `timestamp` or `data`. A number selects a list item, counted from 0, and may also be
written in brackets: `data.items.0.sku` and `data.items[0].sku` are the same path. A path that
is not in an event is skipped (a missing value is `null` in `map`), so a transform fails at
delivery only where its `require` says so; it is checked when the partner is saved instead.

A partner may also have one transform per event type: `{"by_type": {"order.created": T1,
"*": T2}}` applies the transform of the event's exact type, else the one under `"*"`, else
none (the body is sent as it is). `select` picks it; `by_type` stands alone and does not nest.

    {"omit": ["data.customer.email", "data.items[0].price"]}

    {"pick": ["type", "data.order_id", "data.total"],
     "rename": {"type": "event", "data.total": "data.amount"}}

    {"map": {"event": "$.type", "order": "$.data.order_id", "first_sku": "$.data.items[0].sku",
             "email": "$.data.customer.email", "source": "shop", "price": "$$9.99"}}

The last sends `{"event": "order.created", "order": 42, "first_sku": "A-1", "email": null,
"source": "shop", "price": "$9.99"}` for an order without a customer email. In a `map`
template, a string `"$.path"` becomes the value at that path, `"$"` alone the whole body, and a
leading `$$` stands for a literal `$`; objects and lists are filled in recursively, and every
other value (numbers, booleans, null, other strings, object keys) is kept as written.

Details that follow from these rules:

- `pick` keeps the event's own key order, and list items it keeps close up (`pick:
  ["data.items.1"]` leaves a one-item list), as do items `omit` removes. All paths of one
  `pick` or one `omit` refer to that step's input, so `omit: ["data.items.0", "data.items.1"]`
  removes the first two items.
- A `rename` takes the value out of its source, then writes it at its target: it replaces what
  is there, creates missing objects on the way, and is skipped (the value stays where it was)
  when the target would run through a value that is not an object, or through a list index
  that is not there. A rename of a path that is missing does nothing.
- A key containing `.`, `[` or `]` cannot be addressed; a number in a path is an object key
  when it meets an object (`"0"`, or `"007"`; only `0`, `1`, ... select list items).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import msgspec

from notifier import rules

#: The top-level keys of the event a transform receives; a path starting elsewhere is a typo.
ROOTS = ("type", "timestamp", "data")
MAX_PATHS = 200
#: The longest path, in a transform and in a filter alike.
MAX_PATH_LENGTH = 500
MAX_TEMPLATE_NODES = 1000
MAX_TEMPLATE_DEPTH = 32

_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[[0-9]+\])*")
_STEP = re.compile(r"\.?([^.\[\]]+)|\[([0-9]+)\]")
_CANONICAL_INDEX = re.compile(r"0|[1-9][0-9]*")

Path = tuple[str, ...]
#: Paths merged by their steps; `None` marks a path's end, which covers everything beneath it.
Trie = dict[str, "Trie | None"]


MAX_BY_TYPE = 500


class TransformError(ValueError):
    """A transform that cannot be saved, or (from `apply`) an event lacking a path the
    transform requires; the message names the step and the offending part."""


class Transform(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A partner's transform, in the JSON form the module docstring describes."""

    require: list[str] = []
    pick: list[str] | None = None
    omit: list[str] = []
    rename: dict[str, str] = {}
    map: dict[str, Any] | None = None
    #: One transform per event type (or "*"), instead of the steps above.
    by_type: dict[str, Transform] | None = None


def select(t: Transform, event_type: str) -> Transform | None:
    """The transform that applies to an event of this type: `t` itself, or under `by_type`
    the type's own, else the one under "*", else None (the body is sent as it is)."""
    if t.by_type is None:
        return t
    return t.by_type.get(event_type) or t.by_type.get("*")


class _Missing:
    """The marker for "no value here", since `null` is a value an event may hold."""


_MISSING: Any = _Missing()


@lru_cache(maxsize=4096)
def _parse(text: str) -> Path:
    """`data.items[0].sku` -> ("data", "items", "0", "sku"), cached since apply runs per delivery.

    Raises TransformError with only what is wrong, as check() knows where the path came from.
    """
    if not text:
        raise TransformError("is empty")
    if len(text) > MAX_PATH_LENGTH:
        raise TransformError(f"is longer than {MAX_PATH_LENGTH} characters")
    if not _PATH.fullmatch(text):
        raise TransformError(
            "is not valid (write names separated by dots, and list items as .0 or [0])"
        )
    return tuple(key or index for key, index in _STEP.findall(text))


@lru_cache(maxsize=4096)
def list_index(step: str) -> int | None:
    """The list index a step selects, if any: `0`, `1`, ...; `007` is an object key only."""
    return int(step) if _CANONICAL_INDEX.fullmatch(step) else None


@lru_cache(maxsize=1024)
def _trie(paths: tuple[str, ...]) -> Trie:
    """Merge the paths of one `pick` or `omit` so that all of them refer to the same input."""
    root: Trie = {}
    for text in paths:
        node = root
        *parents, last = _parse(text)
        for step in parents:
            child = node.setdefault(step, {})
            if child is None:  # an ancestor is taken whole already
                break
            node = child
        else:
            node[last] = None
    return root


def check(t: Transform) -> None:
    """Raise TransformError naming the first problem, so a bad transform is refused on save."""
    if t.by_type is not None:
        _check_by_type(t)
        return
    _check_steps(t)


def _check_by_type(t: Transform) -> None:
    if t.require or t.pick is not None or t.omit or t.rename or t.map is not None:
        raise TransformError(
            "by_type: stands alone; put pick, omit, rename, map or require in the "
            "transforms under it"
        )
    if len(t.by_type or {}) > MAX_BY_TYPE:
        raise TransformError(f"by_type: at most {MAX_BY_TYPE} event types")
    for event_type, inner in (t.by_type or {}).items():
        if event_type != "*":
            problem = rules.event_type_problem(event_type, "event type")
            if problem:
                raise TransformError(f"by_type: {problem}")
        if inner.by_type is not None:
            raise TransformError(f"by_type.{event_type}: by_type does not nest")
        try:
            _check_steps(inner)
        except TransformError as exc:
            raise TransformError(f"by_type.{event_type}: {exc}") from None


def _check_steps(t: Transform) -> None:
    if t.pick is not None and not t.pick:
        raise TransformError("pick: needs at least one path (leave pick out to keep everything)")
    count = len(t.require) + len(t.pick or ()) + len(t.omit) + 2 * len(t.rename)
    if count > MAX_PATHS:
        raise TransformError(f"at most {MAX_PATHS} paths in all, got {count}")
    for text in t.require:
        _check_path("require", text, ROOTS)
    for text in t.pick or ():
        _check_path("pick", text, ROOTS)
    for text in t.omit:
        _check_path("omit", text, ROOTS)
    for source, target in t.rename.items():
        _check_path("rename", source, ROOTS)
        _check_path("rename", target, None)
    if t.map is not None:
        # map also reads what rename put at new top-level keys.
        roots = tuple(dict.fromkeys([*ROOTS, *(_parse(to)[0] for to in t.rename.values())]))
        _check_template(t.map, "map", roots, depth=0, budget=[MAX_TEMPLATE_NODES])


def _check_path(where: str, text: str, roots: tuple[str, ...] | None, shown: str = "") -> None:
    shown = shown or text
    if len(shown) > 60:
        shown = shown[:57] + "..."
    try:
        path = _parse(text)
    except TransformError as exc:
        raise TransformError(f"{where}: path {shown!r} {exc}") from None
    if roots is not None and path[0] not in roots:
        raise TransformError(
            f"{where}: path {shown!r} does not start with {', '.join(roots[:-1])} or {roots[-1]}"
        )


def _check_template(
    node: Any, where: str, roots: tuple[str, ...], depth: int, budget: list[int]
) -> None:
    """Check each `$` string; bound size and depth, since map walks the template per delivery."""
    budget[0] -= 1
    if budget[0] < 0:
        raise TransformError(f"map: at most {MAX_TEMPLATE_NODES} values in the template")
    if depth > MAX_TEMPLATE_DEPTH:
        raise TransformError(f"{where}: the template nests deeper than {MAX_TEMPLATE_DEPTH}")
    if isinstance(node, str) and node.startswith("$") and node != "$" and not node.startswith("$$"):
        if not node.startswith("$."):
            raise TransformError(
                f"{where}: {node!r} is neither a path like '$.data.id' nor "
                f"'$'; write {'$' + node!r} for the literal text"
            )
        _check_path(where, node[2:], roots, shown=node)
    elif isinstance(node, dict):
        for key, value in node.items():
            _check_template(value, f"{where}.{key}", roots, depth + 1, budget)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_template(value, f"{where}[{i}]", roots, depth + 1, budget)


def apply(t: Transform, event: dict[str, Any]) -> Any:
    """The body for a partner: require, pick, omit, rename, then map, as the module docstring
    says (under `by_type`, the transform `select` picks for the event's type).

    It never mutates `event`: each step builds new objects and lists along the paths it changes
    and shares the rest, so the result may share parts with `event`; treat both as read-only.
    On a checked transform it raises only TransformError, when the event lacks a path of
    `require`, whatever the event's data holds.
    """
    if t.by_type is not None:
        chosen = select(t, str(event.get("type", "")))
        if chosen is None:
            return event
        t = chosen
    for text in t.require:
        if _get(event, _parse(text)) is _MISSING:
            raise TransformError(f"require: {text} is missing from the event")
    body: Any = event
    if t.pick is not None:
        body = _keep(body, _trie(tuple(t.pick)))
        if body is _MISSING:
            body = {}
    if t.omit:
        body = _drop(body, _trie(tuple(t.omit)))
    for source, target in t.rename.items():
        body = _move(body, source, target)
    if t.map is not None:
        body = _fill(t.map, body)
    return body


def _get(node: Any, path: Path) -> Any:
    for step in path:
        if isinstance(node, dict):
            node = node.get(step, _MISSING)
        elif isinstance(node, list) and (i := list_index(step)) is not None and i < len(node):
            node = node[i]
        else:
            return _MISSING
    return node


def _keep(node: Any, trie: Trie) -> Any:
    """Only what the trie's paths reach, or _MISSING when none of them is there."""
    if isinstance(node, dict):
        kept = {
            key: value if (sub := trie[key]) is None else _keep(value, sub)
            for key, value in node.items()
            if key in trie
        }
        kept = {key: value for key, value in kept.items() if value is not _MISSING}
        return kept or _MISSING
    if isinstance(node, list):
        wanted = {
            i: sub
            for step, sub in trie.items()
            if (i := list_index(step)) is not None and i < len(node)
        }
        items = [
            node[i] if sub is None else _keep(node[i], sub) for i, sub in sorted(wanted.items())
        ]
        items = [item for item in items if item is not _MISSING]
        return items or _MISSING
    return _MISSING


def _drop(node: Any, trie: Trie) -> Any:
    """`node` without what the trie's paths reach; list indices all count from the input."""
    if isinstance(node, dict):
        if not any(key in node for key in trie):
            return node
        kept_keys: dict[str, Any] = {}
        for key, value in node.items():
            sub = trie.get(key, {})
            if sub is not None:
                kept_keys[key] = _drop(value, sub) if sub else value
        return kept_keys
    if isinstance(node, list):
        wanted = {
            i: sub
            for step, sub in trie.items()
            if (i := list_index(step)) is not None and i < len(node)
        }
        if not wanted:
            return node
        kept_items: list[Any] = []
        for i, item in enumerate(node):
            sub = wanted.get(i, {})
            if sub is not None:
                kept_items.append(_drop(item, sub) if sub else item)
        return kept_items
    return node


def _move(body: Any, source: str, target: str) -> Any:
    value = _get(body, _parse(source))
    if value is _MISSING:
        return body
    moved = _put(_drop(body, _trie((source,))), _parse(target), value)
    return body if moved is _MISSING else moved


def _put(node: Any, path: Path, value: Any) -> Any:
    """`node` with `value` at `path`, or _MISSING if that would run through a non-container."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(node, dict):
        child = node.get(step, _MISSING)
        placed = _nest(rest, value) if child is _MISSING else _put(child, rest, value)
        return _MISSING if placed is _MISSING else {**node, step: placed}
    if isinstance(node, list) and (i := list_index(step)) is not None and i < len(node):
        placed = _put(node[i], rest, value)
        return _MISSING if placed is _MISSING else [*node[:i], placed, *node[i + 1 :]]
    return _MISSING


def _nest(path: Path, value: Any) -> Any:
    for step in reversed(path):
        value = {step: value}
    return value


def _fill(node: Any, body: Any) -> Any:
    if isinstance(node, str) and node.startswith("$"):
        if node.startswith("$$"):
            return node[1:]
        if node == "$":
            return body
        if node.startswith("$."):
            found = _get(body, _parse(node[2:]))
            return None if found is _MISSING else found
        return node
    if isinstance(node, dict):
        return {key: _fill(value, body) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, body) for value in node]
    return node
