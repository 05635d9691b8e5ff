"""How management commands reach Redis: one client per command, closed when it ends."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from notifier import config, shards
from notifier.redis.connection import connect
from notifier.store import Store

Work = Callable[[Store, argparse.Namespace], Awaitable[Any]]


def with_store(
    work: Work, *, check_layout: bool = True
) -> Callable[[config.Settings, argparse.Namespace], Awaitable[Any]]:
    """`work` with a Store of its own; unless told otherwise, only once NOTIFIER_SHARDS is
    known to be the deployment's (a partner saved with another count is put where no
    process looks)."""

    async def run(settings: config.Settings, args: argparse.Namespace) -> Any:
        # no retries: a person at a terminal wants the error now, not after backoff
        redis = connect(settings, "notifier-cli", retries=0)
        try:
            if check_layout:
                await shards.check(redis, settings.keyspace())
            return await work(Store(redis, settings), args)
        finally:
            await redis.aclose()

    return run
