"""The CLI as a newcomer meets it: one-line errors, the API's own rules and messages, tables on
a terminal and JSON when piped."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
from typing import Any

import aiohttp.test_utils
import pytest
from redis.asyncio import Redis

from notifier.admin import app as api
from notifier.config import Settings
from tests.helpers import KS, TOKEN, EndpointFactory, Spawn, cli, eventually, free_port


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The error a command printed, checked to be one line with no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_redis_unreachable_is_one_line_naming_redis_url(env: dict[str, str]) -> None:
    line = one_line_error(
        cli({**env, "REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0"}, "partners", "list")
    )
    assert "cannot reach Redis" in line and "REDIS_URL" in line
    assert "hunter2" not in line and "user:***@127.0.0.1:1" in line


def test_a_database_the_server_lacks_is_one_line(env: dict[str, str]) -> None:
    url = env["REDIS_URL"].rsplit("/", 1)[0] + "/99"
    line = one_line_error(cli({**env, "REDIS_URL": url}, "partners", "list"))
    assert "no such database" in line and "REDIS_URL" in line


@pytest.mark.parametrize(
    "args",
    [
        ("attempts", "ptn_x", "--limit", "-5"),
        ("attempts", "ptn_x", "--limit", "²"),
        ("dead-letters", "list", "--limit", "0"),
        ("partners", "add", "x", "https://x.example"),
        ("partners", "bogus"),
        ("publish",),
        ("recover", "ptn_x", "--since", "yesterday"),
        ("recover", "ptn_x", "--since", "2026-11-24T12:00:00Z", "--until", "soon"),
        ("messages", "list", "ptn_x", "--limit", "0"),
    ],
)
def test_usage_mistakes_are_one_line_with_status_2(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    line = one_line_error(cli(env, *args), code=2)
    assert "--help" in line


@pytest.mark.parametrize(
    ("var", "value", "expected", "hidden"),
    [
        ("NOTIFIER_MAX_EVENT_BYTES", "abc", "must be a whole number of bytes", None),
        ("NOTIFIER_SECRET_KEY", "not-the-key-hunter2", "NOTIFIER_SECRET_KEY must be", "hunter2"),
        ("NOTIFIER_ADMIN_TOKEN", " ", "NOTIFIER_ADMIN_TOKEN must not be empty", None),
        ("REDIS_URL", "redis://u:hunter2@h:6379/x", "REDIS_URL='redis://u:***@h", "hunter2"),
    ],
)
def test_bad_settings_are_one_line_and_never_echo_secrets(
    env: dict[str, str], var: str, value: str, expected: str, hidden: str | None
) -> None:
    line = one_line_error(cli({**env, var: value}, "partners", "list"))
    assert expected in line
    if hidden:
        assert hidden not in line


def test_an_api_address_in_use_or_unresolvable_is_one_line(env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(cli({**env, "NOTIFIER_API_ADDR": f"127.0.0.1:{port}"}, "api"))
    assert f"NOTIFIER_API_ADDR=127.0.0.1:{port}" in line and "in use" in line
    line = one_line_error(cli({**env, "NOTIFIER_API_ADDR": "no-such-host.invalid:8080"}, "api"))
    assert "NOTIFIER_API_ADDR=no-such-host.invalid:8080" in line


BAD_PARTNERS: list[tuple[list[str], dict[str, Any]]] = [
    (["--max-in-flight", "0"], {"max_in_flight": 0}),
    (["--rate-limit", "fast"], {"rate_limit": "fast"}),
    (
        ["--rate-limit", "5 per 100000000000000000 hours"],
        {"rate_limit": "5 per 100000000000000000 hours"},
    ),
    (["--events", "Order.Created"], {"events": ["Order.Created"]}),
    (["--events", "order.created\n"], {"events": ["order.created\n"]}),
    (["--header", "x-key:a\x01b"], {"headers": {"x-key": "a\x01b"}}),
    (["--header", "webhook-id:x"], {"headers": {"webhook-id": "x"}}),
    (["--transform", '{"omit": ["data..x"]}'], {"transform": {"omit": ["data..x"]}}),
    (["--secret", "whsec_short"], {"secret": "whsec_short"}),
]


@pytest.mark.parametrize(("flags", "body"), BAD_PARTNERS)
async def test_the_cli_refuses_what_the_api_refuses_with_the_same_message(
    redis: Redis, env: dict[str, str], settings: Settings, flags: list[str], body: dict[str, Any]
) -> None:
    base = {"name": "x", "url": "https://x.example.com/hook", "events": ["order.created"]}
    server = aiohttp.test_utils.TestServer(api.create_app(redis, settings))
    async with aiohttp.test_utils.TestClient(server) as client:
        resp = await client.post(
            "/v1/partners", json={**base, **body}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status == 400
        api_message = (await resp.json())["error"]
    args = ["partners", "add", "x", "https://x.example.com/hook"]
    if "--events" not in flags:
        args += ["--events", "order.created"]
    line = one_line_error(cli(env, *args, *flags))
    assert line == f"notifier: error: {api_message}"
    assert await redis.hlen("notifier:partners") == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("order.created", "not json"), "data is not a JSON object"),
        (("order.created", "[1, 2]"), "data is not a JSON object"),
        (("Order.Created", "{}"), "may only contain lower-case letters"),
        (("order.created", "{}", "--id", "x" * 200), "id must be 1 to 128 characters"),
    ],
)
async def test_publish_refuses_what_the_router_would_dead_letter(
    redis: Redis, env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    line = one_line_error(cli(env, "publish", *args))
    assert expected in line
    assert await redis.xlen("notifier:events") == 0


async def test_partners_can_be_updated_enabled_disabled_with_headers_and_own_secret(
    redis: Redis, env: dict[str, str]
) -> None:
    secret = "whsec_" + "A" * 44
    added = cli(
        env,
        "partners",
        "add",
        "shop",
        "https://shop.example.com/hook",
        "--events",
        "order.created",
        "--header",
        "x-api-key: k1",
        "--secret",
        secret,
        "--rate-limit",
        "10/second",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    partner = json.loads(added.stdout)
    assert partner["secret"] == secret and partner["headers"] == {"x-api-key": "k1"}
    pid = partner["id"]

    updated = json.loads(
        cli(
            env,
            "partners",
            "update",
            pid,
            "--events",
            "order.paid,*",
            "--no-rate-limit",
            "--max-in-flight",
            "3",
            "--json",
        ).stdout
    )
    assert updated["events"] == ["order.paid", "*"]
    assert updated["rate_limit"] is None and updated["max_in_flight"] == 3
    assert updated["headers"] == {"x-api-key": "k1"}  # untouched
    assert json.loads(cli(env, "partners", "disable", pid).stdout)["enabled"] is False
    assert json.loads(cli(env, "partners", "enable", pid).stdout)["enabled"] is True
    nothing = one_line_error(cli(env, "partners", "update", pid))
    assert "nothing to change" in nothing
    assert secret not in cli(env, "partners", "show", pid).stdout


def test_an_unknown_partner_is_an_error_everywhere(env: dict[str, str]) -> None:
    for args in (
        ("attempts", "ptn_nope"),
        ("dead-letters", "list", "--partner", "ptn_nope"),
        ("partners", "show", "ptn_nope"),
        ("partners", "enable", "ptn_nope"),
    ):
        assert "no partner 'ptn_nope'" in one_line_error(cli(env, *args))


def test_replay_needs_to_be_told_what(env: dict[str, str]) -> None:
    assert "--all" in one_line_error(cli(env, "dead-letters", "replay"), code=2)


def on_a_terminal(env: dict[str, str], columns: int, *args: str) -> str:
    """What `notifier <args>` shows on a terminal `columns` wide."""
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, **env, "COLUMNS": str(columns)},
        timeout=60,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0, proc.stderr
    return shown.decode()


@pytest.mark.parametrize("columns", [200, 80])
async def test_a_terminal_gets_a_table_and_a_pipe_gets_json(
    redis: Redis, env: dict[str, str], columns: int
) -> None:
    url = "https://shop.example.com/" + "hooks/" * 10
    cli(env, "partners", "add", "shop", url, "--events", "*", "--owner", "acme")
    piped = json.loads(cli(env, "partners", "list").stdout)
    assert [p["name"] for p in piped] == ["shop"]
    text = on_a_terminal(env, columns, "partners", "list")
    assert "shop" in text and "┃" in text  # a table, not JSON
    assert not text.lstrip().startswith("[")
    # the id is what the next command takes: whole even on a narrow terminal, the rest folds
    assert piped[0]["id"] in text
    assert "https://shop" in text or columns < 100  # narrow: the url folds


async def test_stopped_processes_leave_their_consumer_groups(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    """Each process reads under a name of its own: after three restarts, ten names piled up in
    the groups. A process that stops leaves the groups where it holds nothing; the hourly
    janitor removes those a crashed process left once they are idle and hold nothing."""
    from notifier.engine import housekeeping
    from notifier.redis import keys
    from tests.helpers import idle, publish, register, running

    endpoint = await endpoint_factory()
    pid, _ = await register(redis, settings, "p", endpoint.url, ["*"])
    for n in range(3):
        proc = spawn("run", extra={"NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}"})
        await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(n + 1)
        await idle(redis)
        proc.terminate()
        assert proc.wait(30) == 0
    assert await redis.xinfo_consumers("notifier:events", keys.ROUTER_GROUP) == []
    assert await redis.xinfo_consumers(KS.partner(pid).stream, keys.DELIVERY_GROUP) == []

    # A crashed process's names, holding nothing (what they read was settled), idle:
    for stream, group in (
        ("notifier:events", keys.ROUTER_GROUP),
        (KS.partner(pid).stream, keys.DELIVERY_GROUP),
    ):
        entry = await redis.xadd(stream, {"x": "1"})
        await redis.xreadgroup(group, "crashed-1", {stream: ">"}, count=1)
        await redis.xack(stream, group, entry)
        await redis.xdel(stream, entry)
        names = [c["name"] for c in await redis.xinfo_consumers(stream, group)]
        assert names == [b"crashed-1"]
    await redis.delete(keys.JANITOR)  # an hour later
    original = housekeeping.CONSUMER_IDLE_MS
    housekeeping.CONSUMER_IDLE_MS = 0
    try:
        async with running(settings, deliver=False):

            async def pruned() -> bool:
                names = [
                    c["name"]
                    for c in await redis.xinfo_consumers(
                        KS.partner(pid).stream, keys.DELIVERY_GROUP
                    )
                ]
                return b"crashed-1" not in names

            await eventually(pruned, 10, "the janitor to prune crashed-1")
    finally:
        housekeeping.CONSUMER_IDLE_MS = original
    routers = [c["name"] for c in await redis.xinfo_consumers("notifier:events", keys.ROUTER_GROUP)]
    assert b"crashed-1" not in routers
    assert await redis.exists(keys.JANITOR)  # taken by the router that pruned
