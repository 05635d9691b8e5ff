"""`notifier run | router | deliver | api`: the long-running processes."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from notifier import config
from notifier.engine import supervisor

PROCESSES = (
    ("run", (True, True, True), "router, delivery and admin API in one process"),
    ("router", (True, False, False), "route the ingress stream to partner streams"),
    ("deliver", (False, True, False), "deliver partner messages"),
    ("api", (False, False, True), "serve the admin API"),
)


def _process(
    route: bool,
    deliver: bool,
    serve_api: bool,
) -> Callable[[config.Settings, argparse.Namespace], Awaitable[None]]:
    async def run(settings: config.Settings, args: argparse.Namespace) -> None:
        from notifier import service  # the engine: only the processes need it loaded

        service.tune_gc()
        workers = getattr(args, "processes", 0)
        await service.run(
            settings, route=route, deliver=deliver, serve_api=serve_api, workers=workers
        )

    return run


def _workers(text: str) -> int:
    try:
        return supervisor.worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any) -> None:
    for name, parts, text in PROCESSES:
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        cmd.set_defaults(handler=_process(*parts))
        if name in ("run", "deliver"):
            cmd.add_argument(
                "--processes",
                type=_workers,
                default=0,
                metavar="N",
                help="deliver in N worker processes under a supervisor that restarts them "
                "(auto: one per core); by default in this process",
            )
