"""The README's CLI reference, the commands no other test held to what they print or change:
`partners rotate-secret`, `partners update --no-...`, the three forms of `dead-letters
replay`, `messages list --status` and `top --once`. Each is run as a user runs it, and checked
by its output and by what it did in Redis."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.crypto import SecretBox
from notifier.models import Message
from notifier.redis import keys
from notifier.store import Store
from tests.helpers import KS, Spawn, cli, entries, eventually, publish, register

pytestmark = pytest.mark.slow


def run(env: dict[str, str], *args: str) -> Any:
    """`notifier <args>`, piped: it must succeed and print JSON."""
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_rotate_secret_prints_the_new_secret_and_keeps_the_old_for_the_overlap(
    redis: Redis, env: dict[str, str], settings: Settings
) -> None:
    pid, old = await register(redis, settings, "p", "https://p.example.com/hook", ["*"])
    rotated = run(env, "partners", "rotate-secret", pid)
    assert rotated["id"] == pid and rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != old
    assert rotated["previous_secrets_valid_for"] == f"{settings.secret_overlap:g}s"
    stored = await Store(redis, settings).get(pid)
    box = SecretBox(settings.secret_key)
    assert [box.open(s.value) for s in stored.secrets] == [rotated["secret"], old]
    assert stored.secrets[0].expires_ms is None and stored.secrets[1].expires_ms is not None


async def test_update_no_options_clear_what_they_name_and_keep_the_rest(
    redis: Redis, env: dict[str, str]
) -> None:
    added = run(
        env,
        *("partners", "add", "shop", "https://shop.example.com/hook", "--events", "a,b"),
        *("--rate-limit", "5/second", "--header", "x-api-key: k", "--owner", "acme"),
        *("--transform", '{"omit": ["data.email"]}', "--filter", '{"data.total": 1}'),
    )
    pid = added["id"]
    assert added["headers"] == {"x-api-key": "k"} and added["transform"] is not None
    cleared = run(env, "partners", "update", pid, "--no-transform", "--no-headers")
    assert cleared["transform"] is None and cleared["headers"] == {}
    assert cleared["rate_limit"] == "5/second" and cleared["owner"] == "acme"
    cleared = run(env, "partners", "update", pid, "--no-rate-limit", "--no-owner", "--no-filter")
    assert (cleared["rate_limit"], cleared["owner"], cleared["filter"]) == (None, None, None)
    shown = run(env, "partners", "show", pid)
    assert {k: shown[k] for k in ("transform", "headers", "rate_limit", "owner", "filter")} == {
        "transform": None,
        "headers": {},
        "rate_limit": None,
        "owner": None,
        "filter": None,
    }
    assert shown["events"] == ["a", "b"] and shown["name"] == "shop"


async def dead_letter(redis: Redis, partner: str, message_id: str) -> str:
    message = Message(
        id=message_id, type="t", timestamp="2026-01-01T00:00:00.000Z", data=msgspec.Raw(b"{}")
    )
    fields = {"reason": "exhausted", "partner": partner, "message": msgspec.json.encode(message)}
    entry_id = await redis.xadd(keys.DEAD, fields)  # type: ignore[arg-type]
    assert isinstance(entry_id, bytes)
    return entry_id.decode()


async def waiting(redis: Redis, partner: str) -> list[str]:
    """The message ids waiting in a partner's stream."""
    found = await entries(redis, KS.partner(partner).stream)
    return [msgspec.json.decode(fields[b"m"])["id"] for _, fields in found]


async def test_dead_letters_replay_by_ids_by_partner_and_all(
    redis: Redis, env: dict[str, str], settings: Settings
) -> None:
    a, _ = await register(redis, settings, "a", "https://a.example.com/hook", ["*"])
    b, _ = await register(redis, settings, "b", "https://b.example.com/hook", ["*"])
    first = await dead_letter(redis, a, "a-1")
    await dead_letter(redis, a, "a-2")
    await dead_letter(redis, b, "b-1")
    await dead_letter(redis, b, "b-2")
    by_ids = run(env, "dead-letters", "replay", first, "nope-1")
    assert by_ids == {"replayed": 1, "not_found": ["nope-1"]}
    assert await waiting(redis, a) == ["a-1"]
    assert run(env, "dead-letters", "replay", "--partner", b) == {"replayed": 2, "not_found": []}
    assert await waiting(redis, b) == ["b-1", "b-2"]
    assert run(env, "dead-letters", "replay", "--all") == {"replayed": 1, "not_found": []}
    assert await waiting(redis, a) == ["a-1", "a-2"]
    assert await redis.xlen(keys.DEAD) == 0
    assert run(env, "dead-letters", "list") == []


async def test_messages_list_by_status(
    redis: Redis, env: dict[str, str], settings: Settings, spawn: Spawn
) -> None:
    pid, _ = await register(redis, settings, "p", "https://p.example.com/hook", ["*"])
    spawn("router")  # routed, never sent: pending
    await publish(redis, "order.created", {"n": 1}, event_id="m-1")
    await publish(redis, "order.created", {"n": 2}, event_id="m-2")

    async def routed() -> bool:
        return await redis.xlen(KS.partner(pid).stream) == 2

    await eventually(routed, 20, "both messages routed")
    pending = run(env, "messages", "list", pid, "--status", "pending")
    assert [(m["id"], m["state"]) for m in pending] == [("m-2", "pending"), ("m-1", "pending")]
    assert run(env, "messages", "list", pid, "--status", "delivered") == []
    refused = cli(env, "messages", "list", pid, "--status", "lost")
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "status" in refused.stderr


async def test_top_once_prints_one_table_of_the_partners_with_work(
    redis: Redis, env: dict[str, str], settings: Settings, spawn: Spawn
) -> None:
    await register(redis, settings, "shop-off", "https://p.example.com/hook", ["*"], enabled=False)
    spawn("router")
    for n in range(3):
        await publish(redis, "order.created", {"n": n})

    async def routed() -> bool:
        return not await redis.xlen("notifier:events")

    await eventually(routed, 20, "the events routed")
    done = cli({**env, "COLUMNS": "160"}, "top", "--once")  # wide enough for every column
    assert done.returncode == 0, done.stderr
    rows = [" ".join(line.replace("│", " ").split()) for line in done.stdout.splitlines()]
    [row] = [line for line in rows if line.startswith("shop-off ")]
    assert "disabled" in row.split() and "3" in row.split()  # its state and kept backlog
    assert any("ingress lag" in line for line in rows)
    assert "\x1b[?1049h" not in done.stdout  # printed once, not a full-screen view
