"""Signatures and rotation, secrets at rest, SSRF at delivery, hostile endpoints, logs, fuzzing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import tracemalloc
from typing import Any

import aiohttp
import aiohttp.test_utils
import msgspec
import pytest
import standardwebhooks
import svix.webhooks
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.admin import app as api
from notifier.config import Settings
from notifier.engine.sender import Sender
from notifier.errors import ConfigError
from notifier.models import Message, Outcome, Partner
from notifier.store import Store
from tests.helpers import (
    TOKEN,
    EndpointFactory,
    Received,
    Spawn,
    eventually,
    free_port,
    idle,
    publish,
    register,
    running,
)


def signatures(received: Received) -> list[str]:
    return received.headers["webhook-signature"].split(" ")


def verifies(secret: str, received: Received) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(received.body, received.headers)
    except standardwebhooks.webhooks.WebhookVerificationError:
        return False
    svix.webhooks.Webhook(secret).verify(received.body, received.headers)
    return True


async def test_signatures_during_and_after_rotation(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = config.load({**env, "NOTIFIER_SECRET_OVERLAP": "1s"})
    endpoint = await endpoint_factory()
    pid, old = await register(redis, settings, "p", endpoint.url, ["*"])
    store = Store(redis, settings)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
        new = await store.rotate_secret(pid)
        rotated_at = time.time()
        await publish(redis, "order.created", {"n": 2})
        await endpoint.wait_for(2)
        await eventually(lambda: time.time() > rotated_at + 1.1, 5, "the overlap to end")
        await publish(redis, "order.created", {"n": 3})
        await endpoint.wait_for(3)
        await idle(redis)

    before, during, after = endpoint.received
    assert len(signatures(before)) == 1
    assert verifies(old, before) and not verifies(new, before)
    assert len(signatures(during)) == 2
    assert verifies(old, during) and verifies(new, during)
    assert len(signatures(after)) == 1
    assert verifies(new, after) and not verifies(old, after)


async def test_a_partner_may_bring_its_own_secret(
    redis: Redis, settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    endpoint = await endpoint_factory()
    own = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    await register(redis, settings, "p", endpoint.url, ["*"], secret=own)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
    assert verifies(own, endpoint.received[0])


async def test_secrets_are_encrypted_at_rest(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    settings = config.load({**env, "NOTIFIER_SECRET_KEY": key})
    endpoint = await endpoint_factory()
    pid, secret = await register(redis, settings, "p", endpoint.url, ["*"])
    stored = await redis.hget("notifier:partners", pid)
    assert stored is not None
    assert secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
    assert verifies(secret, endpoint.received[0])
    with pytest.raises(config.ConfigError, match="NOTIFIER_SECRET_KEY"):
        config.load({**env, "NOTIFIER_SECRET_KEY": "too-short"})


async def everything_in(redis: Redis) -> dict[bytes, bytes]:
    """Every key in Redis with all it holds (fields, members, entries) as one blob of bytes,
    whatever its type, to search for what must never be stored."""
    # redis-py types replies as bytes | str (some as Optional); this client answers bytes
    client: Any = redis
    found: dict[bytes, bytes] = {}
    async for key in client.scan_iter(count=1000):
        kind = (await client.type(key)).decode()
        parts: list[bytes] = []
        if kind == "string":
            parts = [await client.get(key)]
        elif kind == "hash":
            parts = [b for pair in (await client.hgetall(key)).items() for b in pair]
        elif kind == "list":
            parts = await client.lrange(key, 0, -1)
        elif kind == "set":
            parts = list(await client.smembers(key))
        elif kind == "zset":
            parts = await client.zrange(key, 0, -1)
        elif kind == "stream":
            parts = [
                b for _, fields in await client.xrange(key) for pair in fields.items() for b in pair
            ]
        else:
            raise AssertionError(f"{key!r} is a {kind} this scan does not read")
        found[key] = b"\n".join([key, *parts])
    return found


async def test_a_rotated_secret_is_encrypted_too_and_both_sign(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    settings = config.load({**env, "NOTIFIER_SECRET_KEY": key, "NOTIFIER_SECRET_OVERLAP": "1h"})
    endpoint = await endpoint_factory()
    pid, old = await register(redis, settings, "p", endpoint.url, ["*"])
    store = Store(redis, settings)
    async with running(settings):
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1)
        new = await store.rotate_secret(pid)
        await publish(redis, "order.created", {"n": 2})
        await endpoint.wait_for(2)
        await idle(redis)

    stored = await everything_in(redis)
    # The scan did read the partner record and what delivering wrote, not an empty Redis.
    attempts = f"notifier:{{{pid}}}:attempts".encode()
    assert {b"notifier:partners", attempts} <= set(stored), sorted(stored)
    for name, value in stored.items():
        assert b"whsec_" not in value, f"a plaintext secret in {name!r}"
        for secret in (old, new):
            assert secret.removeprefix("whsec_").encode() not in value, (
                f"a secret's key in {name!r}"
            )
    [record] = await store.partners()
    assert [s.value[:4] for s in record.secrets] == ["enc:", "enc:"]

    during = endpoint.received[1]
    assert len(signatures(during)) == 2
    assert verifies(new, during) and verifies(old, during)
    assert verifies(old, endpoint.received[0]) and not verifies(new, endpoint.received[0])


def key_complaints(stderr: str) -> list[str]:
    """The log lines (JSON, one a line) that mention the key."""
    return [line for line in stderr.splitlines() if "NOTIFIER_SECRET_KEY" in line]


@pytest.mark.parametrize(
    ("another_key", "says"),
    [
        (False, "partner secrets are encrypted: set NOTIFIER_SECRET_KEY"),
        (True, "a partner secret does not decrypt with NOTIFIER_SECRET_KEY"),
    ],
    ids=["no-key", "another-key"],
)
async def test_a_secret_that_does_not_decrypt_disables_the_partner_once(
    redis: Redis,
    env: dict[str, str],
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
    another_key: bool,
    says: str,
) -> None:
    saved_with = base64.urlsafe_b64encode(os.urandom(32)).decode()
    settings = config.load({**env, "NOTIFIER_SECRET_KEY": saved_with})
    endpoint = await endpoint_factory()
    pid, secret = await register(redis, settings, "p", endpoint.url, ["*"])
    store = Store(redis, settings)

    # An empty value is no key at all (config skips it), whatever the test runner's own env.
    wrong = base64.urlsafe_b64encode(os.urandom(32)).decode() if another_key else ""
    proc = spawn(
        "run", extra={"NOTIFIER_SECRET_KEY": wrong, "NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}"}
    )
    await publish(redis, "order.created", {"n": 0})

    async def disabled() -> bool:
        return not (await store.get(pid)).enabled

    await eventually(disabled, 30, "the partner to be disabled")
    reason = (await store.get(pid)).disabled_reason or ""
    assert says in reason, reason
    # More events for it: routed to its stream (kept), but nothing wakes it to be logged again.
    for n in range(1, 4):
        await publish(redis, "order.created", {"n": n})
    stream = f"notifier:{{{pid}}}:stream"

    async def kept() -> bool:
        return await redis.xlen(stream) == 4

    await eventually(kept, 10, "the later events to reach its stream")
    # Absence cannot be polled for: give a process that would try again (a retry loop, a
    # re-lease) a second to do it before it is stopped.
    await asyncio.sleep(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    complaints = key_complaints(proc.stderr.read().decode())
    assert len(complaints) == 1, complaints
    assert json.loads(complaints[0])["event"] == "partner disabled"
    assert json.loads(complaints[0])["reason"] == reason
    assert endpoint.received == [], "a message was sent without its secret"
    assert await redis.xlen("notifier:dead") == 0, "its messages were dead-lettered"
    assert await redis.xlen(stream) == 4

    # Back with the key it was saved with, and enabled again: everything kept is delivered,
    # signed with its secret.
    port = free_port()
    proc = spawn(
        "run", extra={"NOTIFIER_SECRET_KEY": saved_with, "NOTIFIER_API_ADDR": f"127.0.0.1:{port}"}
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def up() -> bool:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, 30, "the admin API")
        async with http.patch(
            f"{base}/v1/partners/{pid}",
            json={"enabled": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["disabled_reason"] is None
    await endpoint.wait_for(4)
    await idle(redis)
    assert sorted(body["data"]["n"] for body in endpoint.bodies()) == [0, 1, 2, 3]
    assert all(verifies(secret, got) for got in endpoint.received)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    assert key_complaints(proc.stderr.read().decode()) == []


async def test_internal_addresses_are_refused_at_delivery(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    guarded = config.load({**env, "NOTIFIER_ALLOWED_NETWORKS": ""})
    endpoint = await endpoint_factory()
    pid, _ = await register(redis, guarded, "p", endpoint.url, ["*"])
    async with running(guarded):
        await publish(redis, "order.created", {"n": 1})
        store = Store(redis, guarded)

        async def attempted() -> bool:
            return bool(await store.attempts(pid))

        await eventually(attempted, 10, "an attempt")
    attempt = (await store.attempts(pid))[0]
    assert not attempt.ok and attempt.status is None
    assert "refused 127.0.0.1" in (attempt.error or "")
    assert "loopback" in (attempt.error or "")
    assert endpoint.received == []


MESSAGE = Message(id="m1", type="t", timestamp="2026-01-01T00:00:00.000Z", data=msgspec.Raw(b"{}"))


async def send_one(settings: Settings, url: str) -> Outcome:
    """One attempt through the real sender, as delivery makes it."""
    partner = Partner(id="p", name="p", url=url, events=["*"])
    async with Sender(settings) as sender:
        return await sender.send(partner, MESSAGE, [b"key"])


async def test_huge_answer_is_cut_not_buffered(
    settings: Settings, endpoint_factory: EndpointFactory
) -> None:
    async def flood(request: web.Request, n: int) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(160):  # 10 MiB
                await response.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    endpoint = await endpoint_factory(flood)
    tracemalloc.start()
    outcome = await send_one(settings, endpoint.url)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert outcome.status == 500 and not outcome.ok
    assert len(outcome.error or "") <= 520
    assert peak < 3 * 1024 * 1024, f"peak {peak} bytes while reading a 10 MiB answer"


async def test_slow_drip_answer_hits_the_total_timeout(
    env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = config.load({**env, "NOTIFIER_REQUEST_TIMEOUT": "500ms"})

    async def drip(request: web.Request, n: int) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        with pytest.raises((ConnectionResetError, asyncio.CancelledError)):
            for _ in range(100):
                await response.write(b"x")
                await asyncio.sleep(0.05)
        return response

    endpoint = await endpoint_factory(drip)
    outcome = await send_one(settings, endpoint.url)
    assert not outcome.ok
    assert outcome.error == "timeout after 0.5s"
    assert outcome.latency_ms < 1500


def test_api_refuses_to_start_without_a_token(settings: Settings) -> None:
    tokenless = msgspec.structs.replace(settings, admin_token=None)
    with pytest.raises(ConfigError, match="NOTIFIER_ADMIN_TOKEN"):
        api.check_token(tokenless)
    api.check_token(msgspec.structs.replace(tokenless, api_local_only=True))
    with pytest.raises(ConfigError, match="loopback"):
        api.check_token(
            msgspec.structs.replace(tokenless, api_local_only=True, api_addr="0.0.0.0:8080")
        )


async def test_no_secret_in_any_log_line(
    redis: Redis, env: dict[str, str], spawn: Spawn, endpoint_factory: EndpointFactory
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    port = free_port()
    failing = await endpoint_factory(lambda r, n: _status(500))
    healthy = await endpoint_factory()
    proc = spawn(
        "run",
        extra={
            "NOTIFIER_LOG_LEVEL": "debug",
            "NOTIFIER_SECRET_KEY": key,
            "NOTIFIER_API_ADDR": f"127.0.0.1:{port}",
            "NOTIFIER_RETRY_SCHEDULE": "100ms",
        },
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    secrets: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def up() -> bool:
            try:
                async with http.get(f"{base}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(up, 30, "the admin API")
        for name, url in (("failing", failing.url), ("healthy", healthy.url)):
            async with http.post(
                f"{base}/v1/partners",
                headers=auth,
                json={
                    "name": name,
                    "url": url,
                    "events": ["*"],
                    "headers": {"x-api-key": "hdr-secret-value"},
                },
            ) as resp:
                created = await resp.json()
                secrets.append(created["secret"])
            async with http.post(
                f"{base}/v1/partners/{created['id']}/secret/rotate", headers=auth
            ) as resp:
                secrets.append((await resp.json())["secret"])
        async with http.get(f"{base}/v1/partners", headers=auth) as resp:
            listing = await resp.text()
        async with http.get(f"{base}/v1/partners", headers={"Authorization": "Bearer x"}):
            pass
    await publish(redis, "order.created", {"n": 1})
    await publish(redis, "order.paid", {"n": 2})
    await healthy.wait_for(2)
    await failing.wait_for(2)
    await eventually(lambda: _dead(redis), 20, "the failing partner's dead letters")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    logs = proc.stderr.read().decode()
    assert "delivery failed" in logs  # the failure path did log
    for secret in [*secrets, *(s.removeprefix("whsec_") for s in secrets)]:
        assert secret not in logs
        assert secret not in listing
    assert TOKEN not in logs and key not in logs


async def _status(code: int) -> web.Response:
    return web.Response(status=code, text="nope")


async def _dead(redis: Redis) -> bool:
    return await redis.xlen("notifier:dead") >= 2
