"""What commands print: a table on a terminal, JSON with `--json` or when piped.

A script that runs `notifier partners list | jq` gets JSON without asking; a person at a
terminal gets a table. Secrets a command shows once (a new partner's, a rotated one) are
printed in both forms, since that is the only time they can be read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
#: Columns holding ids that other commands take.
IDS = frozenset({"id", "partner"})


def wants_json(flag: bool) -> bool:
    return flag or not sys.stdout.isatty()


def show(data: Any, *, as_json: bool, columns: Sequence[str] = ()) -> None:
    """Print `data` (a Struct, a dict or a list of them) as JSON or as a table of `columns`."""
    plain = msgspec.json.decode(_encode(data))  # Raw event data included
    if wants_json(as_json):
        sys.stdout.write(msgspec.json.format(_encode(plain)).decode() + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if isinstance(plain, dict):
        table = Table(show_header=False, box=None)
        for key, value in plain.items():
            table.add_row(f"[bold]{key}[/bold]", _cell(value))
        console.print(table)
        return
    rows = plain if isinstance(plain, list) else [plain]
    if not rows:
        console.print("(none)")
        return
    names = list(columns or rows[0])
    cells = [[_cell(row.get(name)) for name in names] for row in rows]
    table = Table()
    for n, name in enumerate(names):
        if name in IDS or name.endswith("_id"):
            # an id is what the next command needs: never cut, however narrow the terminal
            width = max(len(name), *(len(line[n]) for line in cells))
            table.add_column(name, no_wrap=True, min_width=width)
        else:
            table.add_column(name, overflow="fold")
    for line in cells:
        table.add_row(*line)
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return _encode(value).decode()


def show_page(page: Any, *, as_json: bool, columns: Sequence[str] = ()) -> None:
    """A page of a list: its items as `show` prints them; where more follow, the cursor to ask
    for them with, on stderr, so piped JSON stays a plain list."""
    show(page.data, as_json=as_json, columns=columns)
    if page.next:
        sys.stderr.write(f"more: --after {page.next}\n")
