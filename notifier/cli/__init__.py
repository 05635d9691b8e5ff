"""`notifier`: run the service or its parts, and manage partners, events and dead letters.

Every command fails the same way: one line on stderr saying what to fix, naming the setting or
argument, never a traceback or a secret; exit status 2 for a usage mistake, 1 for anything
else. Library code raises; only `main` turns errors into exit statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NoReturn

import msgspec
from redis import exceptions as rx
from redis.asyncio.sentinel import MasterNotFoundError

from notifier import __version__, config, logs, rules
from notifier.cli import event_types, messages, partners, preview, processes, records, shards
from notifier.cli import settings as settings_command
from notifier.cli import top as live
from notifier.cli.commands import UsageError
from notifier.errors import NotifierError
from notifier.redis.connection import fatal, reason
from notifier.redis.urls import is_tls


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that says where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="notifier",
        description=__doc__.split("\n\n")[0],
        epilog="Settings come from the environment (REDIS_URL, NOTIFIER_*): see README.",
    )
    top.add_argument("--version", action="version", version=f"notifier {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    processes.add_commands(sub)
    partners.add_commands(sub)
    records.add_commands(sub)
    messages.add_commands(sub)
    event_types.add_commands(sub)
    preview.add_commands(sub)
    live.add_commands(sub)
    shards.add_commands(sub)
    settings_command.add_commands(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = config.load()
    except config.ConfigError as exc:
        fail(str(exc))
    logs.configure(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(args.handler(settings, args))
    except KeyboardInterrupt:
        sys.exit(130)
    except UsageError as exc:
        fail(f"{exc} (see notifier --help)", status=2)
    except Exception as exc:
        if settings.log_level == "debug":
            import traceback

            sys.stderr.write(logs.redacted(traceback.format_exc()))
        fail(logs.redacted(describe(exc, settings)))


def describe(exc: BaseException, settings: config.Settings) -> str:
    """One line for an error a command met: what went wrong and what to change."""
    redis_url = config.masked(settings.redis_url)
    if isinstance(exc, NotifierError):
        return str(exc)
    if isinstance(exc, msgspec.ValidationError):
        return rules.validation_message(exc)
    settings_wrong = fatal(exc, settings)
    if settings_wrong is not None:
        return settings_wrong
    if isinstance(exc, MasterNotFoundError):
        return (
            f"no sentinel of REDIS_URL ({redis_url}) names a primary for its service: "
            f"{reason(exc)}; check the service name and that the sentinels run"
        )
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError | ConnectionError):
        asked = "is redis-server running there?"
        if "closed by the server" in str(exc) and is_tls(settings.redis_url):
            # Over TLS 1.3 a server that wants a client certificate may close the connection
            # before its alert is read, so the missing certificate reads as a closed socket.
            asked = (
                "is redis-server running there, or does it require a TLS client certificate "
                "(NOTIFIER_REDIS_CERT and NOTIFIER_REDIS_KEY)?"
            )
        return f"cannot reach Redis at {redis_url} (REDIS_URL): {str(exc).rstrip('.')}; {asked}"
    if isinstance(exc, rx.ResponseError) and "DB index is out of range" in str(exc):
        return (
            f"Redis at {redis_url} has no such database (the number after the port in "
            "REDIS_URL); use 0 to 15 unless the server sets `databases` higher"
        )
    if isinstance(exc, rx.ResponseError):
        return f"Redis at {redis_url} answered an error: {exc}"
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return f"unexpected error: {text} (NOTIFIER_LOG_LEVEL=debug shows the traceback)"


def fail(message: str, status: int = 1) -> NoReturn:
    sys.stderr.write(f"notifier: error: {message}\n")
    sys.exit(status)
