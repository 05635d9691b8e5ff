"""How the management commands are declared: a family of actions (`notifier partners ...`),
each action with its help, its handler (run with a Store of its own), `--json`, and for a list
its page (`--limit`, `--after`). Written once, so every command reads and fails alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from notifier import rules
from notifier.cli.store import Work, with_store
from notifier.errors import Invalid


class UsageError(Invalid):
    """Arguments that cannot go together, found after parsing: exit status 2, like argparse's
    own usage mistakes."""


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


def paged(cmd: argparse.ArgumentParser, default: int) -> None:
    """A list's page: how many, and the cursor of the previous page."""
    cmd.add_argument("--limit", type=limit, default=default, help=f"1 to 1000 (default {default})")
    cmd.add_argument("--after", help="the cursor a previous page printed")


def moment(name: str) -> Callable[[str], int]:
    """An ISO-8601 time (or epoch milliseconds) option, in ms; a bad one is a usage mistake."""

    def parse(text: str) -> int:
        try:
            return rules.moment(text, name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def limit(text: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
        raise argparse.ArgumentTypeError("must be a whole number from 1 to 1000")
    return int(text)
