"""`notifier shards show | move --to N`: the deployment's number of shards, and changing it
while every notifier process is stopped."""

from __future__ import annotations

import argparse
from typing import Any

from notifier import shards
from notifier.cli.output import show
from notifier.cli.store import with_store
from notifier.store import Store


async def _show(store: Store, args: argparse.Namespace) -> None:
    stored = await shards.recorded(store.redis)
    keyspace = store.keyspace
    show(
        {
            "recorded": stored.shards if stored else None,
            "setting": len(keyspace.shards),
            "cluster": keyspace.cluster,
        },
        as_json=args.json,
    )


async def _move(store: Store, args: argparse.Namespace) -> None:
    show(await shards.move(store.redis, store.keyspace.cluster, args.to), as_json=args.json)


def add_commands(sub: Any) -> None:
    json_flag = {"action": "store_true", "help": "print JSON (also when piped)"}
    parser = sub.add_parser(
        "shards",
        help="the deployment's number of shards, and changing it",
        description="The number of shards partners are spread over (NOTIFIER_SHARDS).",
    )
    actions = parser.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=type(parser)
    )
    showing = actions.add_parser(
        "show", help="the recorded count and this setting", description="Show the shard count."
    )
    showing.add_argument("--json", **json_flag)
    showing.set_defaults(handler=with_store(_show, check_layout=False))
    moving = actions.add_parser(
        "move",
        help="move every partner to its shard of N shards (every process stopped)",
        description="Move every partner to its shard of N shards, then set NOTIFIER_SHARDS=N "
        "for every process. Run it only while no notifier process runs.",
    )
    moving.add_argument("--to", type=int, required=True, help="the new number of shards")
    moving.add_argument("--json", **json_flag)
    moving.set_defaults(handler=with_store(_move, check_layout=False))
