"""`notifier event-types list|show|set|remove`: the catalog, as /v1/event-types, refused with
the same messages since both call `notifier.catalog`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from notifier.catalog import EventTypeIn, EventTypes
from notifier.cli.commands import command, family, paged
from notifier.cli.output import show, show_page
from notifier.cli.store import Work
from notifier.errors import Invalid
from notifier.store import Store

COLUMNS = ("type", "description", "deprecated", "updated_at")


def read_json(where: str, what: str) -> Any:
    """A JSON document from a file, or from standard input for `-`; Invalid naming `what`."""
    try:
        text = sys.stdin.buffer.read() if where == "-" else Path(where).read_bytes()
    except OSError as exc:
        raise Invalid(f"{what}: cannot read {where}: {exc.strerror or exc}") from None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise Invalid(f"{what}: {where} is not JSON: {exc}") from None


async def _list(store: Store, args: argparse.Namespace) -> None:
    page = await EventTypes(store.redis).page(after=args.after, limit=args.limit)
    show_page(page, as_json=args.json, columns=COLUMNS)


async def _show(store: Store, args: argparse.Namespace) -> None:
    show(await EventTypes(store.redis).get(args.type), as_json=args.json)


async def _set(store: Store, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"description": args.description, "deprecated": args.deprecated}
    if args.schema:
        body["schema"] = read_json(args.schema, "--schema")
    if args.example:
        body["example"] = read_json(args.example, "--example")
    entry = await EventTypes(store.redis).put(args.type, msgspec.convert(body, EventTypeIn))
    show(entry, as_json=args.json)


async def _remove(store: Store, args: argparse.Namespace) -> None:
    await EventTypes(store.redis).remove(args.type)
    show({"removed": args.type}, as_json=args.json)


def add_commands(sub: Any) -> None:
    actions = family(
        sub,
        "event-types",
        "the catalog of event types and their schemas",
        "The catalog of event types (as /v1/event-types): a description, a JSON Schema "
        "(2020-12) of data that the router checks every event of the type against, an "
        "example. A type needs no entry to be published.",
    )

    def typed(name: str, text: str, handler: Work) -> argparse.ArgumentParser:
        cmd = command(actions, name, text, handler)
        cmd.add_argument("type", help="the event type, e.g. order.created")
        return cmd

    paged(command(actions, "list", "every event type, by name", _list), 100)
    typed("show", "one event type, with its schema and example", _show)
    put = typed("set", "create or replace an event type", _set)
    put.add_argument("--description", required=True, help="what the event means (required)")
    put.add_argument("--schema", metavar="FILE", help="a JSON Schema (2020-12) of data (- stdin)")
    put.add_argument("--example", metavar="FILE", help="an example data object (- stdin)")
    put.add_argument("--deprecated", action="store_true", help="mark the type deprecated")
    typed("remove", "remove an event type: its events are no longer checked", _remove)
