"""`notifier shards show | move --to N`: the deployment's number of shards, and changing it
while every notifier process is stopped."""

from __future__ import annotations

import argparse
from typing import Any

from notifier import shards
from notifier.cli.commands import command, family
from notifier.cli.output import show
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
    actions = family(
        sub,
        "shards",
        "the deployment's number of shards, and changing it",
        "The number of shards partners are spread over (NOTIFIER_SHARDS).",
    )
    command(
        actions,
        "show",
        "the recorded count and this setting",
        _show,
        description="Show the shard count.",
        check_layout=False,
    )
    command(
        actions,
        "move",
        "move every partner to its shard of N shards (every process stopped)",
        _move,
        description="Move every partner to its shard of N shards, then set NOTIFIER_SHARDS=N "
        "for every process. Run it only while no notifier process runs.",
        check_layout=False,
    ).add_argument("--to", type=int, required=True, help="the new number of shards")
