"""`notifier settings`: every setting notifier reads, with its default and meaning, from the
declarations in notifier/config.py; `--markdown` prints the README's table of them."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from notifier import config


async def show(settings: config.Settings, args: argparse.Namespace) -> None:
    if args.markdown:
        print(config.table())
        return
    defaults = {f.name: f.default for f in msgspec.structs.fields(config.Settings)}
    for field, env in config.declarations().items():
        shown = (env.shown or f"`{defaults[field]}`").replace("`", "")
        print(f"{env.name} (default: {shown})\n    {env.help.replace('`', '')}")


def add_commands(sub: Any) -> None:
    cmd = sub.add_parser(
        "settings",
        help="list the environment variables notifier reads",
        description="List every environment variable notifier reads, its default and meaning.",
    )
    cmd.add_argument("--markdown", action="store_true", help="as the README's table")
    cmd.set_defaults(handler=show)
