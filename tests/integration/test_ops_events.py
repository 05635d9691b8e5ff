"""Operational events: appended to notifier:ops, routed like any event to partners that name
their types, and POSTed signed to NOTIFIER_OPS_WEBHOOK_URL."""

from __future__ import annotations

import json
import time

import pytest
import standardwebhooks
from aiohttp import web
from redis.asyncio import Redis

from notifier import config, ops, signing
from notifier.models import PartnerPatch
from notifier.redis import keys
from notifier.store import Store
from tests.helpers import (
    Endpoint,
    EndpointFactory,
    Spawn,
    entries,
    eventually,
    free_port,
    publish,
    register,
)

pytestmark = pytest.mark.slow


async def gone(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=410, text="no such hook")


async def ops_types(redis: Redis) -> list[str]:
    return [fields[b"type"].decode() for _, fields in await entries(redis, keys.OPS)]


async def test_an_ops_webhook_gets_a_signed_partner_disabled_after_a_410(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    receiver: Endpoint = await endpoint_factory()
    watcher: Endpoint = await endpoint_factory()
    everything: Endpoint = await endpoint_factory()
    leaving: Endpoint = await endpoint_factory(gone)
    secret = signing.generate_secret()
    env.update({"NOTIFIER_OPS_WEBHOOK_URL": receiver.url, "NOTIFIER_OPS_WEBHOOK_SECRET": secret})
    settings = config.load(env)
    pid, _ = await register(redis, settings, "leaving", leaving.url, ["order.created"])
    watcher_id, watcher_secret = await register(
        redis, settings, "watcher", watcher.url, [ops.PARTNER_DISABLED, ops.PARTNER_ENABLED]
    )
    await register(redis, settings, "everything", everything.url, ["*"])
    spawn("run", extra={"NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}"})
    await publish(redis, "order.created", {"order_id": 1})
    await receiver.wait_for(1, timeout=30)

    got = receiver.received[0]
    payload = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == ops.PARTNER_DISABLED
    assert payload["data"] == {
        "partner": pid,
        "name": "leaving",
        "reason": "endpoint answered 410 Gone",
    }
    await watcher.wait_for(1)
    copy = standardwebhooks.Webhook(watcher_secret).verify(
        watcher.received[0].body, watcher.received[0].headers
    )
    assert copy["data"]["partner"] == pid
    assert ops.PARTNER_DISABLED in await ops_types(redis)
    (_, fields), *_ = await entries(redis, keys.OPS)
    assert json.loads(fields[b"data"])["partner"] == pid  # the stream keeps what was routed

    # enabling it again is an event too; the `*` partner got the order, never the reports
    await Store(redis, settings).update(pid, PartnerPatch(enabled=True))
    await watcher.wait_for(2)
    assert json.loads(watcher.received[1].body)["type"] == ops.PARTNER_ENABLED
    assert [b["type"] for b in everything.bodies()] == ["order.created"]
    assert watcher_id != pid


async def test_breaker_dead_letter_and_expiring_secret_events(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    down = True

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if down else 200)

    endpoint: Endpoint = await endpoint_factory(flaky)
    watcher: Endpoint = await endpoint_factory()
    # the last retry comes after BREAKER_AFTER (1 s) of failures: the breaker trips
    env.update({"NOTIFIER_RETRY_SCHEDULE": "300ms,1500ms", "NOTIFIER_SECRET_OVERLAP": "30m"})
    settings = config.load(env)
    pid, _ = await register(redis, settings, "flaky", endpoint.url, ["order.created"])
    await register(redis, settings, "watcher", watcher.url, list(ops.TYPES))
    await Store(redis, settings).rotate_secret(pid)  # the old secret ends in 30 minutes
    spawn("run", extra={"NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}"})
    for n in range(20):
        await publish(redis, "order.created", {"n": n})

    async def seen(kind: str) -> bool:
        return kind in await ops_types(redis)

    await eventually(lambda: seen(ops.DEAD_LETTERED), 30, "a dead-lettered event")
    await eventually(lambda: seen(ops.BREAKER_OPENED), 30, "a breaker-opened event")
    await eventually(lambda: seen(ops.SECRET_EXPIRING), 30, "a secret-expiring event")
    down = False
    back = time.monotonic()
    await publish(redis, "order.created", {"n": "after"})
    await eventually(lambda: seen(ops.BREAKER_CLOSED), 20, "a breaker-closed event")
    # an open breaker probes every min(first retry delay, 30 s): 300 ms here
    closed_in = time.monotonic() - back
    print(f"breaker closed {closed_in:.1f}s after the partner came back")
    assert closed_in < 10
    kinds = {json.loads(b.body)["type"] for b in watcher.received}
    await eventually(
        lambda: len({json.loads(b.body)["type"] for b in watcher.received}) >= 4,
        20,
        "the watcher to get each kind",
    )
    kinds = {json.loads(b.body)["type"] for b in watcher.received}
    assert {ops.DEAD_LETTERED, ops.BREAKER_OPENED, ops.BREAKER_CLOSED, ops.SECRET_EXPIRING} <= kinds
    dead = next(
        json.loads(b.body)["data"]
        for b in watcher.received
        if json.loads(b.body)["type"] == ops.DEAD_LETTERED
    )
    assert dead["partner"] == pid and dead["attempts"] == 3 and "gave up" in dead["reason"]
    # announced once, however many routers look
    assert (await ops_types(redis)).count(ops.SECRET_EXPIRING) == 1
