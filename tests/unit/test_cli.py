"""The CLI as a newcomer meets it: one-line errors, the API's own rules and messages, tables on
a terminal and JSON when piped."""

from __future__ import annotations

import argparse
import subprocess
import sys

from redis.exceptions import ConnectionError as RedisConnectionError

from notifier import config
from notifier.cli import describe, parser
from tests.helpers import cli, free_port


def test_version_and_help_for_every_command() -> None:
    from notifier import __version__

    assert cli({}, "--version").stdout.strip() == f"notifier {__version__}"
    top = parser()
    assert top._subparsers is not None
    commands = top._subparsers._group_actions[0]
    assert isinstance(commands, argparse._SubParsersAction)
    for name, sub in commands.choices.items():
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            if isinstance(action.choices, dict):  # the command's own sub-commands
                for child_name, child in action.choices.items():
                    assert child.description, f"{name} {child_name} has no description"
    assert all(action.help for action in commands._choices_actions)


def test_python_dash_m_notifier_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "partners" in result.stdout
    assert free_port() > 0


def test_a_tls_server_that_closes_at_once_is_asked_about_client_certificates() -> None:
    """Over TLS 1.3 a server that requires a client certificate may close the connection
    before its alert is read: the line names the certificate settings, over TLS only."""
    closed = RedisConnectionError("Connection closed by the server before write.")
    tls = config.load({"REDIS_URL": "rediss://127.0.0.1:6380/0"})
    line = describe(closed, tls)
    assert "NOTIFIER_REDIS_CERT" in line and "\n" not in line, line
    plain = describe(closed, config.load({"REDIS_URL": "redis://127.0.0.1:6379/0"}))
    assert "NOTIFIER_REDIS_CERT" not in plain and "is redis-server running there?" in plain
