"""Scenario 9: what choosing what partners receive costs.

In the bench's own process, per event (the bench's ~300-byte order): checking `data` against
a schema with each JSON Schema validator considered (jsonschema-rs, which notifier uses;
fastjsonschema; the reference jsonschema), whether each really checks 2020-12 keywords and
names the path and the rule of an error; a typical filter; a typical per-type transform (the
whole render of a body, as delivery makes it).

Then routing as users run it: `notifier run` delivering to 10 receiving partners, each of its
own owner and with a filter its events match, while 9,990 more are registered, each of another
owner, with a filter, subscribed to the same types (so only the owner index keeps them out),
and every event carries its owner; against the same 10 receiving partners registered alone,
without owners or filters. The ratio is the median of the rounds' ratios.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from benchmarks.bench import Bench, progress
from benchmarks.figures import (
    Figure,
    Goal,
    Results,
    number,
    put_median,
    put_ratio,
)
from benchmarks.measurement import Run, throughput_run
from benchmarks.meters import (
    cpu_text,
)
from benchmarks.sizes import DATA
from notifier import catalog, filters, transforms
from notifier.engine.sender import render
from notifier.models import Message, Partner

SECTIONS = (9,)
FIGURES = [
    Figure("9a", 9, "9a schema check: jsonschema-rs (notifier's)", "us/event"),
    Figure("9b", 9, "9b schema check: fastjsonschema", "us/event"),
    Figure("9c", 9, "9c schema check: jsonschema (reference)", "us/event"),
    Figure("9d", 9, "9d a typical filter", "us/event"),
    Figure("9e", 9, "9e a typical per-type transform (the body rendered)", "us/event"),
    Figure("9f", 9, "9f notifier run, 10 receiving, registered alone", "deliveries/s"),
    Figure("9g", 9, "9g notifier run, all with owners and filters, same 10", "deliveries/s"),
    Figure("9g/f", 9, "ratio 9g / 9f", "", Goal(">=", 0.9)),
]
ALONE, OWNED = 3, 4

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "customer", "total", "currency", "items"],
    "properties": {
        "order_id": {"type": "integer", "minimum": 1},
        "customer": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
        },
        "total": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD", "GBP"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU-[0-9]+$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number"},
                },
            },
        },
        "shipping": {"type": "object", "properties": {"country": {"type": "string"}}},
    },
}
#: Keywords of 2020-12 that earlier drafts lack: a validator that ignores them accepts both.
DRAFT_2020: list[tuple[dict[str, Any], Any]] = [
    ({"prefixItems": [{"type": "integer"}]}, ["a"]),
    ({"dependentRequired": {"a": ["b"]}}, {"a": 1}),
    ({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "b": 2}),
    ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}, "x"),
]
FILTER = {
    "data.total": {"$gte": 100},
    "data.shipping.country": {"$in": ["DE", "AT", "CH"]},
    "data.items[*].sku": {"$exists": True},
}
TRANSFORM = {
    "by_type": {
        "order.created": {
            "omit": ["data.customer.email"],
            "rename": {"data.total": "data.amount"},
        },
        "*": {"map": {"event": "$.type", "order": "$.data.order_id"}},
    }
}


def per_call(fn: Callable[[], Any], seconds: float = 0.5) -> float:
    """µs per call of `fn`, from as many calls as fit in about `seconds` (best of 3)."""
    count = 1
    while True:
        started = time.perf_counter()
        for _ in range(count):
            fn()
        took = time.perf_counter() - started
        if took > seconds / 10:
            break
        count *= 4
    best = took
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def validators() -> dict[str, tuple[Callable[[], Any], str]]:
    """Each library's check of the bench's order, and what it supports, in words."""
    import fastjsonschema
    import jsonschema

    data = json.loads(DATA % (1, 0.0))
    rs = catalog.compile_schema(SCHEMA)
    fast = fastjsonschema.compile(SCHEMA)
    reference = jsonschema.Draft202012Validator(SCHEMA)

    def fast_ok(schema: dict[str, Any], instance: Any) -> bool:
        try:
            fastjsonschema.compile({"$schema": catalog.SCHEMA_URI, **schema})(instance)
            return True
        except fastjsonschema.JsonSchemaException:
            return False
        except fastjsonschema.JsonSchemaDefinitionException:
            return True  # it cannot read the schema: as good as not checking

    def rs_ok(schema: dict[str, Any], instance: Any) -> bool:
        return bool(catalog.compile_schema(schema).is_valid(instance))

    def reference_ok(schema: dict[str, Any], instance: Any) -> bool:
        return bool(jsonschema.Draft202012Validator(schema).is_valid(instance))

    checks: dict[str, Callable[[dict[str, Any], Any], bool]] = {
        "jsonschema-rs": rs_ok,
        "fastjsonschema": fast_ok,
        "jsonschema": reference_ok,
    }
    caught = {
        name: sum(not ok(schema, instance) for schema, instance in DRAFT_2020)
        for name, ok in checks.items()
    }
    bad = {**data, "total": -1}
    names = {
        "jsonschema-rs": catalog.reason(rs, SCHEMA, bad) or "",
        "fastjsonschema": _fast_error(fast, bad),
        "jsonschema": _reference_error(reference, bad),
    }

    def noted(name: str) -> str:
        return (
            f"2020-12 keywords checked: {caught[name]} of {len(DRAFT_2020)}; "
            f"an error reads {names[name]!r}"
        )

    return {
        "jsonschema-rs": (lambda: rs.is_valid(data), noted("jsonschema-rs")),
        "fastjsonschema": (lambda: fast(data), noted("fastjsonschema")),
        "jsonschema": (lambda: reference.is_valid(data), noted("jsonschema")),
    }


def _fast_error(validate: Any, bad: Any) -> str:
    import fastjsonschema

    try:
        validate(bad)
    except fastjsonschema.JsonSchemaException as exc:
        return f"{exc.path}: {exc.rule}"  # type: ignore[attr-defined]
    return ""


def _reference_error(validator: Any, bad: Any) -> str:
    for error in validator.iter_errors(bad):
        return f"{error.json_path}: {error.validator}"
    return ""


def micro(results: Results) -> None:
    for key, (check, note) in zip("abc", validators().values(), strict=True):
        results.put(f"9{key}", per_call(check), note)
    message = Message(
        id="m",
        type="order.created",
        timestamp="2026-11-24T12:00:00.000Z",
        data=msgspec.Raw((DATA % (1, 0.0)).encode()),
    )
    event = {
        "type": message.type,
        "timestamp": message.timestamp,
        "data": json.loads(DATA % (1, 0.0)),
    }
    match = filters.compile_filter(FILTER)
    assert match(event)
    results.put("9d", per_call(lambda: match(event)), f"{json.dumps(FILTER)}, on a decoded event")
    partner = Partner(
        id="p",
        name="p",
        url="https://x",
        events=["*"],
        transform=msgspec.convert(TRANSFORM, transforms.Transform),
    )
    plain = Partner(id="p", name="p", url="https://x", events=["*"])
    untransformed = per_call(lambda: render(plain, message))
    results.put(
        "9e",
        per_call(lambda: render(partner, message)),
        f"by_type, order.created: omit + rename; decode, transform, encode; the body "
        f"untransformed costs {number(untransformed)} us",
    )


async def register_owned(bench: Bench, count: int, url: str, types: int) -> None:
    """`count` partners of owners nobody publishes for, each with a filter, subscribed to the
    published types, 20 at a time."""
    for start in range(0, count, 20):
        await asyncio.gather(
            *(
                bench.register(
                    f"other{i}", url, [f"evt.{i % types}"], OWNED, owner=f"other-{i}", filter=FILTER
                )
                for i in range(start, min(count, start + 20))
            )
        )


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[9] = (
        "Choosing what partners receive: per event in the bench's process; routing with "
        f"owners and filters, notifier run, {s.receiving} partners receiving "
        f"{s.routing_events:,} events"
    )
    micro(results)
    await bench.fresh()
    urls = await bench.endpoints.make({f"p{i}": "ok" for i in range(s.receiving)})
    names = list(urls)
    for i, name in enumerate(names):
        await bench.register(name, urls[name], [f"evt.{i}"], ALONE, max_in_flight=s.max_in_flight)
        await bench.register(
            name,
            urls[name],
            [f"evt.{i}"],
            OWNED,
            max_in_flight=s.max_in_flight,
            owner=f"owner-{i}",
            filter=FILTER,
        )
    sink = (await bench.endpoints.make({"sink": "ok"}))["sink"]
    others = s.owned_registered - s.receiving
    progress(f"9 registering {others:,} more partners, each its owner")
    await register_owned(bench, others, sink, s.receiving)
    alone: list[Run] = []
    owned: list[Run] = []
    for round_ in range(1, s.rounds + 1):
        for db, runs in ((ALONE, alone), (OWNED, owned)):
            progress(f"9{'fg'[db - ALONE]} notifier run, round {round_}/{s.rounds}")
            await bench.fresh(flush=False)
            proc = bench.notifier("run", db=db)
            runs.append(
                await throughput_run(
                    bench, names, {"run": proc}, s.routing_events, db=db, owned=db == OWNED
                )
            )
        put_median(
            results, "9f", [r.rate for r in alone], "CPU " + cpu_text(alone[-1].cpu, ["run"])
        )
        put_median(
            results,
            "9g",
            [r.rate for r in owned],
            f"{s.owned_registered:,} registered, each its owner and a filter, {others:,} "
            "subscribed to the same types; events carry their partner's owner; CPU "
            + cpu_text(owned[-1].cpu, ["run"]),
        )
        put_ratio(results, "9g/f", [r.rate for r in owned], [r.rate for r in alone])
