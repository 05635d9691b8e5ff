"""`notifier run | router | deliver | api`: the long-running processes."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from notifier import config, service

PROCESSES = (
    ("run", (True, True, True), "router, delivery and admin API in one process"),
    ("router", (True, False, False), "route the ingress stream to partner streams"),
    ("deliver", (False, True, False), "deliver partner messages"),
    ("api", (False, False, True), "serve the admin API"),
)


def _process(route: bool, deliver: bool, serve_api: bool,
             ) -> Callable[[config.Settings, argparse.Namespace], Awaitable[None]]:
    async def run(settings: config.Settings, args: argparse.Namespace) -> None:
        service.tune_gc()
        await service.run(settings, route=route, deliver=deliver, serve_api=serve_api)
    return run


def add_commands(sub: Any) -> None:
    for name, parts, text in PROCESSES:
        sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                       ).set_defaults(handler=_process(*parts))
