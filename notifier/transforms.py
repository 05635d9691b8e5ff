"""Per-partner transforms: reshape the body a partner receives.

A transform is JSON, checked when the partner is saved so that delivery never fails on it. Steps
run in this order, each on the result of the one before: `pick`, `omit`, `rename`, then `map`.
Paths are dotted, into the event `{"type", "timestamp", "data"}`; a number picks a list item
(`data.items.0.sku`, also written `data.items[0].sku`).

    {"omit": ["data.customer.email"]}
    {"pick": ["type", "data.order_id", "data.total"], "rename": {"data.total": "data.amount"}}
    {"map": {"event": "$.type", "order": "$.data.order_id",
             "first_sku": "$.data.items[0].sku", "source": "shop", "note": "$$ literal"}}

In `map`, a string starting with `$.` is replaced by the value at that path (null when
missing), `$$` escapes a literal `$`, and every other value is kept as written.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any

import msgspec

_SEGMENT = re.compile(r"^[^.\[\]]+$")
_INDEX = re.compile(r"\[(\d+)\]")
MAX_PATHS = 200


class TransformError(ValueError):
    """A transform that cannot be applied; the message names the offending part."""


class Transform(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pick: list[str] | None = None
    omit: list[str] = []
    rename: dict[str, str] = {}
    map: dict[str, Any] | None = None


Path = tuple[str | int, ...]


@lru_cache(maxsize=4096)
def parse_path(text: str) -> Path:
    """`data.items[0].sku` -> ("data", "items", 0, "sku"); raise TransformError if malformed."""
    if not text or len(text) > 500:
        raise TransformError(f"path {text!r} is empty or too long")
    parts: list[str | int] = []
    for segment in _INDEX.sub(r".\1", text).split("."):
        if not _SEGMENT.match(segment):
            raise TransformError(f"path {text!r} is not valid")
        parts.append(int(segment) if segment.isdigit() else segment)
    return tuple(parts)


def check(t: Transform) -> None:
    paths = [*(t.pick or []), *t.omit, *t.rename.keys(), *t.rename.values()]
    if len(paths) > MAX_PATHS:
        raise TransformError(f"at most {MAX_PATHS} paths")
    for where, group in (("pick", t.pick or []), ("omit", t.omit),
                         ("rename", [*t.rename.keys(), *t.rename.values()])):
        for path in group:
            try:
                parse_path(path)
            except TransformError as exc:
                raise TransformError(f"{where}: {exc}") from None
    if t.map is not None:
        _check_template(t.map, "map")


def _check_template(node: Any, where: str) -> None:
    if isinstance(node, str) and node.startswith("$.") and not node.startswith("$$"):
        try:
            parse_path(node[2:])
        except TransformError as exc:
            raise TransformError(f"{where}: {exc}") from None
    elif isinstance(node, dict):
        for key, value in node.items():
            _check_template(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_template(value, f"{where}[{i}]")


_MISSING = object()


def _get(node: Any, path: Path) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        else:
            return _MISSING
    return node


def _parent(node: Any, path: Path, create: bool) -> Any:
    for part in path[:-1]:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        elif isinstance(node, dict):
            key = str(part)
            if key not in node or not isinstance(node[key], dict | list):
                if not create:
                    return None
                node[key] = {}
            node = node[key]
        else:
            return None
    return node


def _delete(root: Any, path: Path) -> Any:
    parent = _parent(root, path, create=False)
    last = path[-1]
    if isinstance(parent, dict) and str(last) in parent:
        return parent.pop(str(last))
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        return parent.pop(last)
    return _MISSING


def _set(root: Any, path: Path, value: Any) -> None:
    parent = _parent(root, path, create=True)
    if isinstance(parent, dict):
        parent[str(path[-1])] = value
    elif isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
        parent[path[-1]] = value


def _fill(node: Any, event: Any) -> Any:
    if isinstance(node, str):
        if node.startswith("$$"):
            return node[1:]
        if node.startswith("$."):
            found = _get(event, parse_path(node[2:]))
            return None if found is _MISSING else found
        return node
    if isinstance(node, dict):
        return {key: _fill(value, event) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, event) for value in node]
    return node


def apply(t: Transform, event: dict[str, Any]) -> Any:
    """The transformed body; never raises on a checked transform, never mutates `event`."""
    result: Any = copy.deepcopy(event)
    if t.pick is not None:
        picked: dict[str, Any] = {}
        for text in t.pick:
            path = parse_path(text)
            found = _get(result, path)
            if found is not _MISSING:
                _set(picked, tuple(str(p) for p in path), found)
        result = picked
    for text in t.omit:
        _delete(result, parse_path(text))
    for source, target in t.rename.items():
        value = _delete(result, parse_path(source))
        if value is not _MISSING:
            _set(result, parse_path(target), value)
    if t.map is not None:
        result = _fill(t.map, result)
    return result
