"""The admin API over real HTTP against real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.config import Settings
from notifier.dead_letters import DeadLetters
from notifier.models import Message
from notifier.redis import keys
from notifier.redis.lua import Call, Scripts
from notifier.store import Store
from tests.helpers import (
    KS,
    TOKEN,
    EndpointFactory,
    entries,
    eventually,
    free_port,
    idle,
    publish,
    register,
    running,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client(
    redis: Redis, settings: Settings
) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    port = free_port()
    import msgspec

    settings = msgspec.structs.replace(settings, api_addr=f"127.0.0.1:{port}")
    runner = await api.serve(api.create_app(redis, settings), settings)
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}"
    await runner.cleanup()


PARTNER = {
    "name": "awesome-reviews",
    "url": "https://reviews.example.com/hooks",
    "events": ["order.created", "order.paid"],
    "rate_limit": "50/second",
    "max_in_flight": 5,
    "headers": {"x-api-key": "abc"},
}


async def test_token_is_required(client: tuple[aiohttp.ClientSession, str]) -> None:
    http, base = client
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        async with http.get(f"{base}/v1/partners", headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "missing or wrong bearer token"
    async with http.post(f"{base}/v1/partners", json=PARTNER) as resp:
        assert resp.status == 401
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"status": "ok", "redis": "ok"}


async def test_partner_lifecycle(client: tuple[aiohttp.ClientSession, str]) -> None:
    http, base = client
    async with http.post(f"{base}/v1/partners", json=PARTNER, headers=AUTH) as resp:
        assert resp.status == 201
        created = await resp.json()
    pid = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["order.created", "order.paid"]
    assert created["enabled"] is True

    async with http.get(f"{base}/v1/partners/{pid}", headers=AUTH) as resp:
        shown = await resp.json()
    assert shown["name"] == "awesome-reviews"
    assert "secret" not in shown and "secrets" not in shown

    async with http.patch(
        f"{base}/v1/partners/{pid}", json={"events": ["*"]}, headers=AUTH
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["events"] == ["*"]

    async with http.get(f"{base}/v1/partners", headers=AUTH) as resp:
        listed = await resp.json()
    assert [p["id"] for p in listed["data"]] == [pid] and listed["next"] is None
    assert created["secret"] not in str(listed)

    async with http.post(f"{base}/v1/partners/{pid}/secret/rotate", headers=AUTH) as resp:
        rotated = await resp.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]

    async with http.delete(f"{base}/v1/partners/{pid}", headers=AUTH) as resp:
        assert resp.status == 204
    async with http.get(f"{base}/v1/partners/{pid}", headers=AUTH) as resp:
        assert resp.status == 404
        assert "no partner" in (await resp.json())["error"]


async def test_patch_with_null_clears_the_rate_limit_and_the_transform(
    client: tuple[aiohttp.ClientSession, str], redis: Redis, settings: Settings
) -> None:
    """`null` clears a field, a field left out stays: the answer, the stored record and the
    body the partner would receive (through delivery's own code) all say so."""
    http, base = client
    limited = {**PARTNER, "transform": {"omit": ["data.email"]}}
    async with http.post(f"{base}/v1/partners", json=limited, headers=AUTH) as resp:
        pid = (await resp.json())["id"]
    event = {"event": {"type": "order.created", "data": {"id": 1, "email": "a@example.com"}}}

    async def would_receive() -> Any:
        url = f"{base}/v1/partners/{pid}/preview"
        async with http.post(url, json=event, headers=AUTH) as resp:
            assert resp.status == 200
            return json.loads((await resp.json())["body"])["data"]

    assert await would_receive() == {"id": 1}
    cleared = {"rate_limit": None, "transform": None}
    async with http.patch(f"{base}/v1/partners/{pid}", json=cleared, headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["rate_limit"] is None and answer["transform"] is None
    assert answer["headers"] == PARTNER["headers"]  # left out, kept
    stored = await Store(redis, settings).get(pid)
    assert stored.rate_limit is None and stored.transform is None
    assert await would_receive() == {"id": 1, "email": "a@example.com"}
    async with http.patch(f"{base}/v1/partners/{pid}", json={"name": "n"}, headers=AUTH) as resp:
        assert (await resp.json())["rate_limit"] is None  # stays cleared


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[]", "Expected `object`"),
        (b'{"url": "https://x.example.com", "events": ["a"]}', "name"),
        (b'{"name": "x", "url": "https://x.example.com", "events": []}', "events"),
        (b'{"name": "x", "url": "https://x.example.com", "events": ["Bad Type"]}', "events"),
        (b'{"name": "x", "url": "ftp://x.example.com", "events": ["a"]}', "url"),
        (
            b'{"name": "x", "url": "http://x.example.com", "events": ["a"], "max_in_flight": 0}',
            "max_in_flight",
        ),
        (
            b'{"name": "x", "url": "https://x.example.com", "events": ["a"], "rate_limit": "fast"}',
            "rate_limit",
        ),
        (
            b'{"name": "x", "url": "https://x.example.com", "events": ["a"], "colour": "red"}',
            "colour",
        ),
        (
            b'{"name": "x", "url": "https://x.example.com", "events": ["a"], '
            b'"headers": {"webhook-signature": "forged"}}',
            "webhook-signature",
        ),
    ],
)
async def test_bad_bodies_get_400_with_a_message(
    client: tuple[aiohttp.ClientSession, str], body: bytes, needle: str
) -> None:
    http, base = client
    async with http.post(f"{base}/v1/partners", data=body, headers=AUTH) as resp:
        assert resp.status == 400
        message = (await resp.json())["error"]
    assert needle in message


async def test_unknown_partner_is_404(client: tuple[aiohttp.ClientSession, str]) -> None:
    http, base = client
    async with http.patch(
        f"{base}/v1/partners/ptn_nope", json={"enabled": False}, headers=AUTH
    ) as resp:
        assert resp.status == 404
    async with http.get(f"{base}/v1/partners/ptn_nope/attempts", headers=AUTH) as resp:
        assert resp.status == 404


async def test_a_request_line_the_http_server_refuses_is_a_documented_plain_400(
    client: tuple[aiohttp.ClientSession, str],
) -> None:
    """aiohttp's HTTP parser refuses a request line over 8190 bytes before the API sees it,
    with a plain-text 400: a client's mistake, never a 5xx, and /openapi.json says so."""
    http, base = client
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{base}/v1/dead-letters?after={'x' * 20_000}", headers=auth) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/plain"
    async with http.get(f"{base}/openapi.json") as resp:
        documented = (await resp.json())["paths"]["/v1/dead-letters"]["get"]["responses"]["400"]
    assert set(documented["content"]) == {"application/json", "text/plain"}


async def test_oversized_body_is_refused(client: tuple[aiohttp.ClientSession, str]) -> None:
    http, base = client
    body = b'{"name": "' + b"x" * 300_000 + b'"}'
    async with http.post(f"{base}/v1/partners", data=body, headers=AUTH) as resp:
        assert resp.status == 413
        assert "error" in await resp.json()


async def test_replay_takes_each_dead_letter_once_and_only_by_its_full_id(
    client: tuple[aiohttp.ClientSession, str], redis: Redis, settings: Settings
) -> None:
    """A bare millisecond id ("1") replayed one of the entries of that millisecond and then
    deleted nothing (XDEL reads it as "1-0"), and a repeated id replayed its message twice:
    either way the partner got the message again on the next replay."""
    http, base = client
    pid, _ = await register(redis, settings, "p", "https://p.example.com", ["*"])
    message = msgspec.json.encode(
        Message(
            id="m1",
            type="order.created",
            timestamp="2026-01-01T00:00:00.000Z",
            data=msgspec.Raw(b"{}"),
        )
    )
    for entry_id in ("1-1", "1-2"):
        await redis.xadd(
            keys.DEAD,
            {"reason": "retries exhausted", "partner": pid, "message": message, "attempts": "[]"},
            id=entry_id,
        )

    async def replay(ids: list[str]) -> Any:
        async with http.post(
            f"{base}/v1/dead-letters/replay", json={"ids": ids}, headers=AUTH
        ) as resp:
            assert resp.status == 200
            return await resp.json()

    assert await replay(["1"]) == {"replayed": 0, "not_found": ["1"]}
    assert await redis.xlen(KS.partner(pid).stream) == 0
    assert await replay(["1-1", "1-1", "1-1", "9-9", "not-an-id", "-", "+"]) == {
        "replayed": 1,
        "not_found": ["9-9", "not-an-id", "-", "+"],
    }
    assert await redis.xlen(KS.partner(pid).stream) == 1
    assert [i for i, _ in await entries(redis, keys.DEAD)] == [b"1-2"]


@pytest.mark.parametrize("retention", ["7d", "0"])
async def test_replays_at_once_take_each_dead_letter_once(
    redis: Redis,
    env: dict[str, str],
    endpoint_factory: EndpointFactory,
    monkeypatch: pytest.MonkeyPatch,
    retention: str,
) -> None:
    """Replays of one dead letter at once, each of them past reading it before any sends it
    again: one takes it, and the partner receives the message once more. Each replay read
    the dead letter, sent the message again and deleted it in separate steps, so every one
    sent it (with the message index off, that many copies waited; with it on, each replay
    counted itself as the one that did)."""
    settings = config.load({**env, "NOTIFIER_MESSAGE_RETENTION": retention})
    healthy = asyncio.Event()

    async def down_until_fixed(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=200 if healthy.is_set() else 500)

    endpoint = await endpoint_factory(down_until_fixed)
    pid, _ = await register(redis, settings, "p", endpoint.url, ["order.created"])
    async with running(settings):
        await publish(redis, "order.created", {"order_id": 1}, event_id="ord-1")

        async def dead_lettered() -> bool:
            return bool(await redis.xlen(keys.DEAD))

        await eventually(dead_lettered, 20, "the message to be dead-lettered")
        await idle(redis)
    [(letter, _)] = await entries(redis, keys.DEAD)
    # by its entry id, and (while the index knows it) by the message's id
    given = [letter.decode()] * 3 + (["ord-1"] * 2 if retention != "0" else [])
    original = Scripts.run
    arrived = asyncio.Event()
    waiting: list[object] = []

    async def together(self: Scripts, call: Call[Any]) -> Any:
        if call.script == "resend":
            waiting.append(call)
            if len(waiting) == len(given):
                arrived.set()
            await asyncio.wait_for(arrived.wait(), 10)
        return await original(self, call)

    monkeypatch.setattr(Scripts, "run", together)
    dead_letters = DeadLetters(redis, settings)
    answers = await asyncio.gather(*(dead_letters.replay(ids=[i]) for i in given))
    assert sum(answer.replayed for answer in answers) == 1
    assert await redis.xlen(KS.partner(pid).stream) == 1
    assert await redis.xlen(keys.DEAD) == 0
    monkeypatch.undo()
    healthy.set()
    tried = len(endpoint.received)
    async with running(settings):
        await endpoint.wait_for(tried + 1)
        await idle(redis)
    assert len(endpoint.received) == tried + 1
    assert endpoint.received[-1].headers["webhook-id"] == "ord-1"
