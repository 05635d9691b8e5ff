"""How the management commands are declared: a family of actions (`notifier partners ...`),
each action with its help, its handler (run with a Store of its own), `--json`, and for a list
its page (`--limit`, `--after`). Written once, so every command reads and fails alike."""

from __future__ import annotations

import argparse
from typing import Any

from notifier.cli.store import Work, with_store


def family(sub: Any, name: str, text: str, description: str) -> Any:
    """`notifier <name> ACTION`: the subparsers its actions are added to."""
    group = sub.add_parser(name, help=text, description=description)
    return group.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=type(group)
    )


def command(
    actions: Any,
    name: str,
    text: str,
    handler: Work,
    *,
    description: str | None = None,
    check_layout: bool = True,
) -> argparse.ArgumentParser:
    """One command that runs `handler` with a Store, and prints JSON with `--json`."""
    cmd: argparse.ArgumentParser = actions.add_parser(
        name, help=text, description=description or text
    )
    cmd.add_argument("--json", action="store_true", help="print JSON (also when piped)")
    cmd.set_defaults(handler=with_store(handler, check_layout=check_layout))
    return cmd


def paged(cmd: argparse.ArgumentParser, default: int, kind: Any = None) -> None:
    """A list's page: how many, and the cursor of the previous page."""
    cmd.add_argument(
        "--limit", type=kind or limit, default=default, help=f"1 to 1000 (default {default})"
    )
    cmd.add_argument("--after", help="the cursor a previous page printed")


def limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 1000")
    return int(text)
