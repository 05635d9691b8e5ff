"""Retries, dead letters, replay and partner disabling against real Redis and real endpoints."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
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
from notifier.models import PartnerPatch
from notifier.retry import JITTER
from notifier.store import Store
from tests.helpers import (
    KS,
    TOKEN,
    Endpoint,
    EndpointFactory,
    Received,
    eventually,
    free_port,
    idle,
    publish,
    register,
    running,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: How late a retry may come beyond its delay and jitter: polling, settling, a loaded machine.
SLACK = 0.4


def header(received: Received, name: str) -> str:
    return {k.lower(): v for k, v in received.headers.items()}[name]


def webhook_ids(endpoint: Endpoint) -> list[str]:
    return [header(r, "webhook-id") for r in endpoint.received]


def gaps(endpoint: Endpoint) -> list[float]:
    times = [r.at for r in endpoint.received]
    return [b - a for a, b in itertools.pairwise(times)]


def with_schedule(env: dict[str, str], schedule: str, **more: str) -> Settings:
    return config.load({**env, "NOTIFIER_RETRY_SCHEDULE": schedule, **more})


class Admin:
    """The admin API served in this process, and an HTTP client for it."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str, body: Any) -> Any:
        async with self.http.post(self.base + path, json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture
async def admin(redis: Redis, settings: Settings) -> AsyncIterator[Admin]:
    port = free_port()
    settings = msgspec.structs.replace(settings, api_addr=f"127.0.0.1:{port}")
    runner = await api.serve(api.create_app(redis, settings), settings)
    async with aiohttp.ClientSession() as http:
        yield Admin(http, f"http://127.0.0.1:{port}")
    await runner.cleanup()


async def attempts_of(redis: Redis, settings: Settings, pid: str) -> list[Any]:
    """The partner's attempts log, oldest first."""
    return sorted(await Store(redis, settings).attempts(pid), key=lambda a: a.attempt)


SHAPE = ("message_id", "event_type", "attempt", "at", "status", "latency_ms", "ok", "error")


async def test_fails_twice_then_succeeds_with_one_webhook_id_at_the_scheduled_gaps(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, admin: Admin
) -> None:
    schedule = (0.3, 0.6)
    settings = with_schedule(env, "300ms,600ms")

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500, text="try later") if n <= 2 else web.Response()

    endpoint = await endpoint_factory(flaky)
    pid, _ = await register(redis, settings, "flaky", endpoint.url, ["*"])
    async with running(settings):
        entry = await publish(redis, "order.created", {"order_id": 1})
        await endpoint.wait_for(3)
        await idle(redis)

    assert len(endpoint.received) == 3
    assert webhook_ids(endpoint) == [f"msg_{entry}"] * 3
    for gap, delay in zip(gaps(endpoint), schedule, strict=True):
        assert delay <= gap < delay * (1 + JITTER) + SLACK, (
            f"retry came {gap:.3f}s after the previous try; schedule says {delay}s"
        )

    logged = await attempts_of(redis, settings, pid)
    assert [(a.attempt, a.status, a.ok) for a in logged] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert {a.message_id for a in logged} == {f"msg_{entry}"}
    assert all(a.event_type == "order.created" for a in logged)
    assert logged[0].error is not None and "500" in logged[0].error

    shown = (await admin.get(f"/v1/partners/{pid}/attempts"))["data"]
    assert sorted((a["attempt"], a["status"], a["ok"]) for a in shown) == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    for row in shown:
        assert row["message_id"] == f"msg_{entry}"
        assert row["event_type"] == "order.created"
        assert row["latency_ms"] >= 0
        # one shape whatever the outcome: a success shows its error as null
        assert sorted(row) == sorted(SHAPE)
    assert [row["error"] is None for row in sorted(shown, key=lambda r: r["attempt"])] == [
        False,
        False,
        True,
    ]


async def run_cli(env: dict[str, str], *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_exhausted_message_is_dead_lettered_then_replayed_with_its_webhook_id(
    redis: Redis,
    settings: Settings,
    env: dict[str, str],
    endpoint_factory: EndpointFactory,
    admin: Admin,
) -> None:
    down = True

    async def outage(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503, text="down for maintenance") if down else web.Response()

    endpoint = await endpoint_factory(outage)
    pid, _ = await register(redis, settings, "down", endpoint.url, ["*"])
    tries = len(settings.retry_schedule) + 1
    async with running(settings):
        entry = await publish(redis, "order.paid", {"order_id": 9, "total": 12.5})
        await endpoint.wait_for(tries)

        async def dead_lettered() -> bool:
            return len((await DeadLetters(redis, settings).page(pid)).data) == 1

        await eventually(dead_lettered, 10, "the message to be dead-lettered")
        await idle(redis)
        assert len(endpoint.received) == tries

        [letter] = (await DeadLetters(redis, settings).page(pid)).data
        assert letter.partner == pid
        assert letter.message is not None
        assert letter.message.id == f"msg_{entry}"
        assert letter.message.type == "order.paid"
        assert json.loads(bytes(letter.message.data)) == {"order_id": 9, "total": 12.5}
        assert f"gave up after {tries} attempts" in letter.reason
        assert "503" in letter.reason
        assert [a.attempt for a in letter.attempts] == list(range(1, tries + 1))
        for attempt in letter.attempts:
            assert attempt.status == 503
            assert attempt.ok is False
            assert attempt.latency_ms >= 0
            assert attempt.error is not None and "down for maintenance" in attempt.error

        listed = await run_cli(env, "dead-letters", "list")
        assert len(listed) == 1
        shown = listed[0]
        assert shown["partner"] == pid
        assert shown["reason"] == letter.reason
        assert shown["message"]["id"] == f"msg_{entry}"
        assert shown["message"]["type"] == "order.paid"
        assert shown["message"]["data"] == {"order_id": 9, "total": 12.5}
        assert len(shown["attempts"]) == tries
        for attempt in shown["attempts"]:
            assert attempt["status"] == 503
            assert "latency_ms" in attempt
            assert "down for maintenance" in attempt["error"]

        down = False
        assert await admin.post("/v1/dead-letters/replay", {"partner": pid}) == {
            "replayed": 1,
            "not_found": [],
        }
        await endpoint.wait_for(tries + 1)
        await idle(redis)

    assert webhook_ids(endpoint) == [f"msg_{entry}"] * (tries + 1)
    assert json.loads(endpoint.received[-1].body)["data"] == {"order_id": 9, "total": 12.5}
    assert (await DeadLetters(redis, settings).page()).data == []
    assert await admin.get("/v1/dead-letters") == {"data": [], "next": None}


async def failed_attempts(redis: Redis, settings: Settings, pid: str, count: int) -> list[Any]:
    """Wait until the attempts log holds `count` attempts; return them oldest first."""
    store = Store(redis, settings)

    async def logged() -> bool:
        return len(await store.attempts(pid)) >= count

    await eventually(logged, 15, f"{count} attempts in the log of {pid}")
    return await attempts_of(redis, settings, pid)


async def test_a_timeout_is_retried_and_logged(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "200ms,400ms", NOTIFIER_REQUEST_TIMEOUT="500ms")
    released = asyncio.Event()

    async def slow_first(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            # answers long after the request timeout; cancelled when notifier hangs up
            await asyncio.wait_for(released.wait(), 10)
        return web.Response()

    endpoint = await endpoint_factory(slow_first)
    pid, _ = await register(redis, settings, "slow", endpoint.url, ["*"])
    try:
        async with running(settings):
            await publish(redis, "order.created", {"n": 1})
            await endpoint.wait_for(2)
            await idle(redis)
    finally:
        released.set()
    first, second = await failed_attempts(redis, settings, pid, 2)
    assert (first.attempt, first.ok, first.status) == (1, False, None)
    assert first.error == "timeout after 0.5s"
    assert 450 <= first.latency_ms < 2000
    assert (second.attempt, second.ok, second.status) == (2, True, 200)
    assert webhook_ids(endpoint)[0] == webhook_ids(endpoint)[1]


async def test_connection_refused_is_retried_and_logged(
    redis: Redis,
    env: dict[str, str],
) -> None:
    settings = with_schedule(env, "100ms,100ms,5s")
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    pid, _ = await register(redis, settings, "refused", url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        logged = await failed_attempts(redis, settings, pid, 3)
    assert [a.attempt for a in logged] == [1, 2, 3]
    for attempt in logged:
        assert attempt.ok is False
        assert attempt.status is None
        assert attempt.error is not None
        assert "ClientConnectorError" in attempt.error, attempt.error
        assert "Cannot connect to host 127.0.0.1" in attempt.error, attempt.error
    assert len({a.message_id for a in logged}) == 1


async def test_a_redirect_is_a_failure_and_never_followed(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "100ms,100ms,5s")
    elsewhere = await endpoint_factory()

    async def moved(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": elsewhere.url})

    endpoint = await endpoint_factory(moved)
    pid, _ = await register(redis, settings, "moved", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(3)
        logged = await failed_attempts(redis, settings, pid, 3)
    assert [(a.attempt, a.status, a.ok) for a in logged] == [
        (1, 302, False),
        (2, 302, False),
        (3, 302, False),
    ]
    for attempt in logged:
        assert attempt.error == "HTTP 302: redirects are not followed"
    assert elsewhere.received == [], "a redirect was followed"


async def test_retry_after_on_429_is_honoured_over_a_shorter_schedule(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = with_schedule(env, "100ms,100ms")

    async def busy_once(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        return web.Response()

    endpoint = await endpoint_factory(busy_once)
    pid, _ = await register(redis, settings, "busy", endpoint.url, ["*"])
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(2)
        await idle(redis)
    [gap] = gaps(endpoint)
    assert 1.0 <= gap < 1.0 + SLACK, f"second try came {gap:.3f}s after the 429"
    first, second = await attempts_of(redis, settings, pid)
    assert (first.status, first.ok) == (429, False)
    assert first.error is not None and "429" in first.error
    assert (second.status, second.ok) == (200, True)


async def test_ordered_partner_holds_later_messages_until_the_head_succeeds(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    failures = 0

    async def head_fails_twice(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal failures
        if json.loads(await request.read())["data"]["n"] == 1 and failures < 2:
            failures += 1
            return web.Response(status=500)
        return web.Response()

    endpoint = await endpoint_factory(head_fails_twice)
    pid, _ = await register(redis, settings, "ordered", endpoint.url, ["*"], ordered=True)
    async with running(settings):
        for n in range(1, 6):
            await publish(redis, "order.created", {"n": n})
        await endpoint.wait_for(7)
        await idle(redis)
    assert [b["data"]["n"] for b in endpoint.bodies()] == [1, 1, 1, 2, 3, 4, 5]
    logged = await attempts_of(redis, settings, pid)
    assert [(a.status, a.ok) for a in logged if a.attempt > 1] == [(500, False), (200, True)]


async def test_410_gone_disables_the_partner_and_keeps_its_messages(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    gone = True

    async def responder(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410, text="no such hook") if gone else web.Response()

    endpoint = await endpoint_factory(responder)
    pid, _ = await register(redis, settings, "gone", endpoint.url, ["*"])
    store = Store(redis, settings)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})

        async def disabled() -> bool:
            return not (await store.get(pid)).enabled

        await eventually(disabled, 10, "the partner to be disabled")
        partner = await store.get(pid)
        assert partner.disabled_reason is not None and "410" in partner.disabled_reason
        assert len(endpoint.received) == 1

        # more events for a disabled partner are kept, as is the one that got the 410
        await publish(redis, "order.created", {"n": 2})
        await publish(redis, "order.created", {"n": 3})

        async def kept() -> bool:
            return (
                await redis.xlen("notifier:events") == 0
                and await redis.xlen(KS.partner(pid).stream) == 3
            )

        await eventually(kept, 10, "the messages to be kept in the partner's stream")
        assert (await DeadLetters(redis, settings).page()).data == []
        assert len(endpoint.received) == 1

        gone = False
        enabled_at = time.monotonic()
        updated = await store.update(pid, PartnerPatch(enabled=True))
        assert updated.enabled is True and updated.disabled_reason is None
        await endpoint.wait_for(4)
        await idle(redis)

    assert sorted(b["data"]["n"] for b in endpoint.bodies()[1:]) == [1, 2, 3]
    assert all(r.at >= enabled_at for r in endpoint.received[1:]), (
        "a message reached the partner while it was disabled"
    )
    assert (await store.get(pid)).enabled is True
    assert (await DeadLetters(redis, settings).page()).data == []
